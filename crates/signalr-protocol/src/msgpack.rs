//! The MessagePack hub protocol: every message is a varint length followed by one MessagePack
//! array.
//!
//! The reader is hand-written rather than built on a generic decoder so that argument, item and
//! result values can be sliced out of the frame without decoding them, with every declared
//! length checked against the bytes actually present before it is trusted, and nesting bounded.
//! The writer emits the layouts .NET emits: the 6-element form of invocations, a headers map in
//! types 1-5, a 3-element Close, and the most compact integer and string encodings.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{EncodeError, ProtocolError};
use crate::framing::binary;
use crate::message::{
    Ack, Arguments, CancelInvocation, Close, Completion, CompletionResult, Headers, HubMessage,
    Invocation, Sequence, StreamItem, message_type,
};
use crate::protocol::Protocol;
use crate::raw::{MAX_DEPTH, RawValue};

const RESULT_KIND_ERROR: u8 = 1;
const RESULT_KIND_VOID: u8 = 2;
const RESULT_KIND_VALUE: u8 = 3;

pub(crate) fn parse_message(
    buf: &mut BytesMut,
    max_message_size: usize,
) -> Result<Option<HubMessage>, ProtocolError> {
    let Some((len, prefix_len)) = binary::read_length_prefix(buf)? else {
        return Ok(None);
    };
    if len > max_message_size {
        return Err(ProtocolError::MessageTooLarge {
            max: max_message_size,
        });
    }
    if len == 0 {
        return Err(ProtocolError::InvalidFrame(
            "a message has a length of zero".to_owned(),
        ));
    }
    if buf.len() - prefix_len < len {
        return Ok(None);
    }
    buf.advance(prefix_len);
    let frame = buf.split_to(len).freeze();
    parse_body(&frame).map(Some)
}

/// The elements of `bytes`, which must be exactly one MessagePack array, as ranges.
pub(crate) fn array_element_ranges(bytes: &[u8]) -> Result<Vec<Range<usize>>, ProtocolError> {
    let mut r = Reader::new(bytes);
    let marker = r.peek("the array")?;
    let Some(count) = r.array_len("the array")? else {
        return Err(ProtocolError::InvalidMessagePack(format!(
            "expected an array, found {}",
            describe(marker)
        )));
    };
    let mut ranges = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        ranges.push(r.skip_value(2)?);
    }
    r.expect_end()?;
    Ok(ranges)
}

/// The description inside an error from this module, for callers that wrap it in their own.
pub(crate) fn error_detail(err: ProtocolError) -> String {
    match err {
        ProtocolError::InvalidMessagePack(detail) => detail,
        other => other.to_string(),
    }
}

/// Check that `bytes` is exactly one well-formed MessagePack value within the nesting limit.
pub(crate) fn validate_value(bytes: &[u8]) -> Result<(), ProtocolError> {
    let mut r = Reader::new(bytes);
    r.skip_value(1)?;
    r.expect_end()
}

fn parse_body(frame: &Bytes) -> Result<HubMessage, ProtocolError> {
    let mut r = Reader::new(frame);
    let marker = r.peek("the message")?;
    let count = match r.array_len("the message")? {
        Some(0) => {
            return Err(ProtocolError::InvalidMessagePack(
                "the message array is empty".to_owned(),
            ));
        }
        Some(count) => count,
        None => {
            return Err(ProtocolError::InvalidMessagePack(format!(
                "a hub message must be an array, found {}",
                describe(marker)
            )));
        }
    };
    let kind = r.int("type")?;
    let Some(ty) = u8::try_from(kind).ok().filter(|t| (1..=9).contains(t)) else {
        return Err(ProtocolError::UnknownMessageType(
            i64::try_from(kind).unwrap_or(i64::MAX),
        ));
    };
    let mut e = Elements {
        r,
        left: count - 1,
        ty,
    };
    let value =
        |range: Range<usize>| RawValue::from_encoded(Protocol::MessagePack, frame.slice(range));

    let message = match ty {
        message_type::INVOCATION | message_type::STREAM_INVOCATION => {
            let headers = e.next("headers")?.headers()?;
            let invocation_id = e
                .next("invocationId")?
                .optional_str("invocationId")?
                .filter(|id| !id.is_empty());
            if ty == message_type::STREAM_INVOCATION && invocation_id.is_none() {
                return Err(ProtocolError::MissingField {
                    message_type: ty,
                    field: "invocationId",
                });
            }
            let target = e.next("target")?.required_str(ty, "target")?;
            let args = e.next("arguments")?;
            let marker = args.peek("arguments")?;
            let Some(count) = args.array_len("arguments")? else {
                return Err(ProtocolError::InvalidField {
                    field: "arguments",
                    reason: format!("expected an array, found {}", describe(marker)),
                });
            };
            let mut arguments = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                arguments.push(value(args.skip_value(3)?));
            }
            let stream_ids = if e.left > 0 {
                e.next("streamIds")?.stream_ids()?
            } else {
                Vec::new()
            };
            let invocation = Invocation {
                headers,
                invocation_id,
                target,
                arguments: Arguments::Values(arguments),
                stream_ids,
            };
            if ty == message_type::INVOCATION {
                HubMessage::Invocation(invocation)
            } else {
                HubMessage::StreamInvocation(invocation)
            }
        }
        message_type::STREAM_ITEM => {
            let headers = e.next("headers")?.headers()?;
            let invocation_id = e.next("invocationId")?.required_str(ty, "invocationId")?;
            let item = value(e.next("item")?.skip_value(2)?);
            HubMessage::StreamItem(StreamItem {
                headers,
                invocation_id,
                item,
            })
        }
        message_type::COMPLETION => {
            let headers = e.next("headers")?.headers()?;
            let invocation_id = e.next("invocationId")?.required_str(ty, "invocationId")?;
            let kind = e.next("resultKind")?.int("resultKind")?;
            let result = match u8::try_from(kind) {
                Ok(RESULT_KIND_ERROR) => {
                    CompletionResult::Error(e.next("error")?.required_str(ty, "error")?)
                }
                Ok(RESULT_KIND_VOID) => CompletionResult::Void,
                Ok(RESULT_KIND_VALUE) => {
                    CompletionResult::Value(value(e.next("result")?.skip_value(2)?))
                }
                _ => {
                    return Err(ProtocolError::InvalidField {
                        field: "resultKind",
                        reason: format!("expected 1, 2 or 3, found {kind}"),
                    });
                }
            };
            HubMessage::Completion(Completion {
                headers,
                invocation_id,
                result,
            })
        }
        message_type::CANCEL_INVOCATION => {
            let headers = e.next("headers")?.headers()?;
            let invocation_id = e.next("invocationId")?.required_str(ty, "invocationId")?;
            HubMessage::CancelInvocation(CancelInvocation {
                headers,
                invocation_id,
            })
        }
        message_type::PING => HubMessage::Ping,
        message_type::CLOSE => {
            let error = e.next("error")?.optional_str("error")?;
            // The JavaScript client sends the 2-element form without the flag.
            let allow_reconnect = if e.left > 0 {
                e.next("allowReconnect")?.optional_bool("allowReconnect")?
            } else {
                false
            };
            HubMessage::Close(Close {
                error,
                allow_reconnect,
            })
        }
        message_type::ACK => HubMessage::Ack(Ack {
            sequence_id: e.next("sequenceId")?.sequence_id()?,
        }),
        _ => HubMessage::Sequence(Sequence {
            sequence_id: e.next("sequenceId")?.sequence_id()?,
        }),
    };
    // Later protocol versions may append elements; skip them like the official readers do.
    while e.left > 0 {
        e.left -= 1;
        e.r.skip_value(2)?;
    }
    e.r.expect_end()?;
    Ok(message)
}

/// The remaining elements of the message array.
struct Elements<'a> {
    r: Reader<'a>,
    left: usize,
    ty: u8,
}

impl<'a> Elements<'a> {
    fn next(&mut self, field: &'static str) -> Result<&mut Reader<'a>, ProtocolError> {
        if self.left == 0 {
            return Err(ProtocolError::MissingField {
                message_type: self.ty,
                field,
            });
        }
        self.left -= 1;
        Ok(&mut self.r)
    }
}

/// A cursor over a MessagePack buffer that never reads past its end and never allocates
/// based on a declared length.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(what: &str) -> ProtocolError {
        ProtocolError::InvalidMessagePack(format!("the data ends in the middle of {what}"))
    }

    fn peek(&self, what: &str) -> Result<u8, ProtocolError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| Self::truncated(what))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolError> {
        if n > self.remaining() {
            return Err(Self::truncated(what));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn byte(&mut self, what: &str) -> Result<u8, ProtocolError> {
        let b = self.peek(what)?;
        self.pos += 1;
        Ok(b)
    }

    fn be<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn len16(&mut self, what: &str) -> Result<usize, ProtocolError> {
        Ok(usize::from(u16::from_be_bytes(self.be(what)?)))
    }

    fn len32(&mut self, what: &str) -> Result<usize, ProtocolError> {
        usize::try_from(u32::from_be_bytes(self.be(what)?)).map_err(|_| Self::truncated(what))
    }

    /// The element count if the next value is an array (consumed), `None` (nothing consumed)
    /// otherwise. A count larger than the bytes left is rejected here: every element takes at
    /// least one byte, so such a count can only be a lie.
    fn array_len(&mut self, what: &str) -> Result<Option<usize>, ProtocolError> {
        let count = match self.peek(what)? {
            m @ 0x90..=0x9f => {
                self.pos += 1;
                usize::from(m & 0x0f)
            }
            0xdc => {
                self.pos += 1;
                self.len16(what)?
            }
            0xdd => {
                self.pos += 1;
                self.len32(what)?
            }
            _ => return Ok(None),
        };
        self.check_count(count, what)?;
        Ok(Some(count))
    }

    fn map_len(&mut self, what: &str) -> Result<Option<usize>, ProtocolError> {
        let count = match self.peek(what)? {
            m @ 0x80..=0x8f => {
                self.pos += 1;
                usize::from(m & 0x0f)
            }
            0xde => {
                self.pos += 1;
                self.len16(what)?
            }
            0xdf => {
                self.pos += 1;
                self.len32(what)?
            }
            _ => return Ok(None),
        };
        self.check_count(count.saturating_mul(2), what)?;
        Ok(Some(count))
    }

    fn check_count(&self, items: usize, what: &str) -> Result<(), ProtocolError> {
        if items > self.remaining() {
            return Err(ProtocolError::InvalidMessagePack(format!(
                "{what} declares {items} elements but only {} bytes follow",
                self.remaining()
            )));
        }
        Ok(())
    }

    /// Any integer encoding, widened so that both i64 and u64 fit.
    fn int(&mut self, field: &'static str) -> Result<i128, ProtocolError> {
        let marker = self.peek(field)?;
        let value = match marker {
            0x00..=0x7f => i128::from(marker),
            0xe0..=0xff => i128::from(marker as i8),
            0xcc..=0xd3 => {
                self.pos += 1;
                match marker {
                    0xcc => i128::from(self.byte(field)?),
                    0xcd => i128::from(u16::from_be_bytes(self.be(field)?)),
                    0xce => i128::from(u32::from_be_bytes(self.be(field)?)),
                    0xcf => i128::from(u64::from_be_bytes(self.be(field)?)),
                    0xd0 => i128::from(i8::from_be_bytes(self.be(field)?)),
                    0xd1 => i128::from(i16::from_be_bytes(self.be(field)?)),
                    0xd2 => i128::from(i32::from_be_bytes(self.be(field)?)),
                    _ => i128::from(i64::from_be_bytes(self.be(field)?)),
                }
            }
            _ => {
                return Err(ProtocolError::InvalidField {
                    field,
                    reason: format!("expected an integer, found {}", describe(marker)),
                });
            }
        };
        if marker <= 0x7f || marker >= 0xe0 {
            self.pos += 1;
        }
        Ok(value)
    }

    /// A string, or `None` for nil.
    fn optional_str(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        let marker = self.peek(field)?;
        let len = match marker {
            0xc0 => {
                self.pos += 1;
                return Ok(None);
            }
            0xa0..=0xbf => {
                self.pos += 1;
                usize::from(marker & 0x1f)
            }
            0xd9 => {
                self.pos += 1;
                usize::from(self.byte(field)?)
            }
            0xda => {
                self.pos += 1;
                self.len16(field)?
            }
            0xdb => {
                self.pos += 1;
                self.len32(field)?
            }
            _ => {
                return Err(ProtocolError::InvalidField {
                    field,
                    reason: format!("expected a string, found {}", describe(marker)),
                });
            }
        };
        let bytes = self.take(len, field)?;
        let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::InvalidField {
            field,
            reason: "the string is not valid UTF-8".to_owned(),
        })?;
        Ok(Some(text.to_owned()))
    }

    fn required_str(&mut self, ty: u8, field: &'static str) -> Result<String, ProtocolError> {
        self.optional_str(field)?
            .ok_or(ProtocolError::MissingField {
                message_type: ty,
                field,
            })
    }

    fn optional_bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        let marker = self.byte(field)?;
        match marker {
            0xc0 | 0xc2 => Ok(false),
            0xc3 => Ok(true),
            _ => Err(ProtocolError::InvalidField {
                field,
                reason: format!("expected a boolean, found {}", describe(marker)),
            }),
        }
    }

    fn sequence_id(&mut self) -> Result<u64, ProtocolError> {
        let id = self.int("sequenceId")?;
        u64::try_from(id).map_err(|_| ProtocolError::InvalidField {
            field: "sequenceId",
            reason: format!("expected a non-negative integer, found {id}"),
        })
    }

    fn headers(&mut self) -> Result<Headers, ProtocolError> {
        let marker = self.peek("headers")?;
        if marker == 0xc0 {
            self.pos += 1;
            return Ok(Headers::new());
        }
        let Some(count) = self.map_len("headers")? else {
            return Err(ProtocolError::InvalidField {
                field: "headers",
                reason: format!("expected a map, found {}", describe(marker)),
            });
        };
        let mut headers = Headers::with_capacity(count.min(16));
        for _ in 0..count {
            let name = self.optional_str("headers")?;
            let value = self.optional_str("headers")?;
            match (name, value) {
                (Some(name), Some(value)) => headers.push((name, value)),
                _ => {
                    return Err(ProtocolError::InvalidField {
                        field: "headers",
                        reason: "header names and values must be strings".to_owned(),
                    });
                }
            }
        }
        Ok(headers)
    }

    fn stream_ids(&mut self) -> Result<Vec<String>, ProtocolError> {
        let marker = self.peek("streamIds")?;
        if marker == 0xc0 {
            self.pos += 1;
            return Ok(Vec::new());
        }
        let Some(count) = self.array_len("streamIds")? else {
            return Err(ProtocolError::InvalidField {
                field: "streamIds",
                reason: format!("expected an array, found {}", describe(marker)),
            });
        };
        let mut ids = Vec::with_capacity(count.min(16));
        for _ in 0..count {
            ids.push(self.required_str(0, "streamIds").map_err(|_| {
                ProtocolError::InvalidField {
                    field: "streamIds",
                    reason: "stream ids must be strings".to_owned(),
                }
            })?);
        }
        Ok(ids)
    }

    /// Step over one complete value at nesting level `depth` without decoding it, returning
    /// where it lies in the buffer.
    fn skip_value(&mut self, depth: usize) -> Result<Range<usize>, ProtocolError> {
        let start = self.pos;
        self.skip(depth)?;
        Ok(start..self.pos)
    }

    fn skip(&mut self, depth: usize) -> Result<(), ProtocolError> {
        if depth > MAX_DEPTH {
            return Err(ProtocolError::InvalidMessagePack(format!(
                "values are nested more than {MAX_DEPTH} levels deep"
            )));
        }
        const WHAT: &str = "a value";
        let marker = self.byte(WHAT)?;
        let skip = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f | 0xde | 0xdf | 0x90..=0x9f | 0xdc | 0xdd => {
                self.pos -= 1;
                let items = match self.map_len(WHAT)? {
                    Some(count) => count * 2,
                    None => self.array_len(WHAT)?.unwrap_or(0),
                };
                for _ in 0..items {
                    self.skip(depth + 1)?;
                }
                0
            }
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xc4 | 0xd9 => usize::from(self.byte(WHAT)?),
            0xc5 | 0xda => self.len16(WHAT)?,
            0xc6 | 0xdb => self.len32(WHAT)?,
            // Extensions: a length, then the type byte, then the data.
            0xc7 => usize::from(self.byte(WHAT)?) + 1,
            0xc8 => self.len16(WHAT)? + 1,
            0xc9 => self.len32(WHAT)?.saturating_add(1),
            0xca => 4,
            0xcb => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 => 4,
            0xcf | 0xd3 => 8,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            _ => {
                return Err(ProtocolError::InvalidMessagePack(
                    "the reserved byte 0xc1 is not a valid MessagePack value".to_owned(),
                ));
            }
        };
        self.take(skip, WHAT)?;
        Ok(())
    }

    fn expect_end(&self) -> Result<(), ProtocolError> {
        if self.remaining() > 0 {
            return Err(ProtocolError::InvalidMessagePack(format!(
                "{} unexpected bytes follow the message",
                self.remaining()
            )));
        }
        Ok(())
    }
}

fn describe(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xc4..=0xc6 => "binary data",
        0xca | 0xcb => "a float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension value",
        _ => "the reserved byte 0xc1",
    }
}

pub(crate) fn write_message(message: &HubMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
    if let HubMessage::Ping = message {
        out.extend_from_slice(&[0x02, 0x91, message_type::PING]);
        return Ok(());
    }
    write_framed(out, |out| write_body(message, out))
}

/// A framed Invocation whose arguments are serialized straight into `out` (structs as maps,
/// as [`RawValue::encode`] does).
pub(crate) fn write_invocation_of<A: serde::Serialize + ?Sized>(
    invocation_id: Option<&str>,
    target: &str,
    arguments: &A,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    write_framed(out, |out| {
        write_invocation_head(
            message_type::INVOCATION,
            &Headers::new(),
            invocation_id,
            target,
            out,
        );
        arguments.serialize(&mut rmp_serde::Serializer::new(out.writer()).with_struct_map())?;
        write_array_len(0, out);
        Ok(())
    })
}

/// Append the body that `body` writes, preceded by its varint length.
fn write_framed(
    out: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    // Most messages are shorter than 128 bytes and need a 1-byte prefix: reserve it up front
    // and only move the body when a longer prefix turns out to be needed.
    let start = out.len();
    out.put_u8(0);
    let body_start = out.len();
    body(out)?;
    let len = out.len() - body_start;
    if len > binary::MAX_PAYLOAD_LEN {
        return Err(EncodeError::new(format!(
            "a MessagePack message of {len} bytes exceeds the 2147483647-byte frame limit"
        )));
    }
    let mut prefix = [0u8; 10];
    let n = binary::encode_length_prefix(len, &mut prefix);
    if n > 1 {
        out.extend_from_slice(&prefix[1..n]);
        out.copy_within(body_start..body_start + len, start + n);
    }
    out[start..start + n].copy_from_slice(&prefix[..n]);
    Ok(())
}

fn write_body(message: &HubMessage, out: &mut BytesMut) -> Result<(), EncodeError> {
    match message {
        HubMessage::Invocation(invocation) => {
            write_invocation(message_type::INVOCATION, invocation, out)?;
        }
        HubMessage::StreamInvocation(invocation) => {
            write_invocation(message_type::STREAM_INVOCATION, invocation, out)?;
        }
        HubMessage::StreamItem(item) => {
            out.extend_from_slice(&[0x94, message_type::STREAM_ITEM]);
            write_headers(&item.headers, out);
            write_str(&item.invocation_id, out);
            write_value(&item.item, out)?;
        }
        HubMessage::Completion(completion) => {
            let len = if let CompletionResult::Void = completion.result {
                4
            } else {
                5
            };
            out.extend_from_slice(&[0x90 | len, message_type::COMPLETION]);
            write_headers(&completion.headers, out);
            write_str(&completion.invocation_id, out);
            match &completion.result {
                CompletionResult::Error(error) => {
                    out.put_u8(RESULT_KIND_ERROR);
                    write_str(error, out);
                }
                CompletionResult::Void => out.put_u8(RESULT_KIND_VOID),
                CompletionResult::Value(value) => {
                    out.put_u8(RESULT_KIND_VALUE);
                    write_value(value, out)?;
                }
            }
        }
        HubMessage::CancelInvocation(cancel) => {
            out.extend_from_slice(&[0x93, message_type::CANCEL_INVOCATION]);
            write_headers(&cancel.headers, out);
            write_str(&cancel.invocation_id, out);
        }
        HubMessage::Ping => out.extend_from_slice(&[0x91, message_type::PING]),
        HubMessage::Close(close) => {
            out.extend_from_slice(&[0x93, message_type::CLOSE]);
            match &close.error {
                Some(error) => write_str(error, out),
                None => out.put_u8(0xc0),
            }
            out.put_u8(if close.allow_reconnect { 0xc3 } else { 0xc2 });
        }
        HubMessage::Ack(ack) => {
            out.extend_from_slice(&[0x92, message_type::ACK]);
            write_uint(ack.sequence_id, out);
        }
        HubMessage::Sequence(sequence) => {
            out.extend_from_slice(&[0x92, message_type::SEQUENCE]);
            write_uint(sequence.sequence_id, out);
        }
    }
    Ok(())
}

fn write_invocation(
    ty: u8,
    invocation: &Invocation,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    write_invocation_head(
        ty,
        &invocation.headers,
        invocation.invocation_id.as_deref(),
        &invocation.target,
        out,
    );
    match &invocation.arguments {
        Arguments::Values(values) => {
            write_array_len(values.len(), out);
            for value in values {
                write_value(value, out)?;
            }
        }
        Arguments::Encoded(array) => write_value(array, out)?,
    }
    write_array_len(invocation.stream_ids.len(), out);
    for id in &invocation.stream_ids {
        write_str(id, out);
    }
    Ok(())
}

/// An invocation's array up to its arguments: type, headers, id (nil when empty) and target.
fn write_invocation_head(
    ty: u8,
    headers: &Headers,
    invocation_id: Option<&str>,
    target: &str,
    out: &mut BytesMut,
) {
    out.extend_from_slice(&[0x96, ty]);
    write_headers(headers, out);
    match invocation_id.filter(|id| !id.is_empty()) {
        Some(id) => write_str(id, out),
        None => out.put_u8(0xc0),
    }
    write_str(target, out);
}

fn write_headers(headers: &Headers, out: &mut BytesMut) {
    write_map_len(headers.len(), out);
    for (name, value) in headers {
        write_str(name, out);
        write_str(value, out);
    }
}

fn write_value(value: &RawValue, out: &mut BytesMut) -> Result<(), EncodeError> {
    if value.protocol() == Protocol::MessagePack {
        out.extend_from_slice(value.as_bytes());
    } else {
        out.extend_from_slice(value.to_protocol(Protocol::MessagePack)?.as_bytes());
    }
    Ok(())
}

fn write_uint(n: u64, out: &mut BytesMut) {
    if n < 0x80 {
        out.put_u8(n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.put_u8(0xcc);
        out.put_u8(n);
    } else if let Ok(n) = u16::try_from(n) {
        out.put_u8(0xcd);
        out.put_u16(n);
    } else if let Ok(n) = u32::try_from(n) {
        out.put_u8(0xce);
        out.put_u32(n);
    } else {
        out.put_u8(0xcf);
        out.put_u64(n);
    }
}

fn write_str(s: &str, out: &mut BytesMut) {
    let len = s.len();
    if len < 32 {
        out.put_u8(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.put_u8(0xd9);
        out.put_u8(len);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(0xda);
        out.put_u16(len);
    } else {
        out.put_u8(0xdb);
        out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_array_len(len: usize, out: &mut BytesMut) {
    write_container_len(len, 0x90, 0xdc, out);
}

fn write_map_len(len: usize, out: &mut BytesMut) {
    write_container_len(len, 0x80, 0xde, out);
}

/// `fix` is the fixarray/fixmap marker base; `wide` the 16-bit marker, followed by the 32-bit one.
fn write_container_len(len: usize, fix: u8, wide: u8, out: &mut BytesMut) {
    if len < 16 {
        out.put_u8(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.put_u8(wide);
        out.put_u16(len);
    } else {
        out.put_u8(wide + 1);
        out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use super::*;

    fn every_kind_of_value() -> Vec<Value> {
        vec![
            Value::Nil,
            Value::Boolean(true),
            Value::Boolean(false),
            Value::from(5),
            Value::from(-5),
            Value::from(200u8),
            Value::from(60_000u16),
            Value::from(4_000_000_000u32),
            Value::from(u64::MAX),
            Value::from(-100i8),
            Value::from(-30_000i16),
            Value::from(-2_000_000_000i32),
            Value::from(i64::MIN),
            Value::F32(1.5),
            Value::F64(-2.25),
            Value::from("str"),
            Value::from("x".repeat(40)),
            Value::from("y".repeat(300)),
            Value::from("z".repeat(70_000)),
            Value::Binary(vec![1, 2, 3]),
            Value::Binary(vec![0; 300]),
            Value::Binary(vec![0; 70_000]),
            Value::Array((0..20).map(Value::from).collect()),
            Value::Array((0..70_000).map(|_| Value::Nil).collect()),
            Value::Map(vec![(Value::from("k"), Value::Array(vec![Value::Nil]))]),
            Value::Map((0..20).map(|i| (Value::from(i), Value::Nil)).collect()),
            Value::Map((0..70_000).map(|i| (Value::from(i), Value::Nil)).collect()),
            Value::Ext(1, vec![9]),
            Value::Ext(2, vec![9; 2]),
            Value::Ext(3, vec![9; 4]),
            Value::Ext(-1, vec![9; 8]),
            Value::Ext(5, vec![9; 16]),
            Value::Ext(6, vec![9; 3]),
            Value::Ext(7, vec![9; 300]),
            Value::Ext(8, vec![9; 70_000]),
        ]
    }

    #[test]
    fn the_walker_steps_over_every_kind_of_value() {
        let values = every_kind_of_value();
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &Value::Array(values.clone())).expect("encode");
        let ranges = array_element_ranges(&bytes).expect("walk");
        assert_eq!(ranges.len(), values.len());
        for (range, expected) in ranges.into_iter().zip(&values) {
            let mut slice = &bytes[range];
            let decoded = rmpv::decode::read_value(&mut slice).expect("decode");
            assert_eq!(&decoded, expected);
            assert!(slice.is_empty(), "range too long for {expected:?}");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for value in every_kind_of_value() {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &value).expect("encode");
            assert_eq!(validate_value(&bytes), Ok(()));
            // The long values only need their headers checked.
            for cut in (0..bytes.len()).take(64) {
                assert!(
                    validate_value(&bytes[..cut]).is_err(),
                    "{value:?} cut at {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0xc0);
            assert!(validate_value(&longer).is_err());
        }
    }

    #[test]
    fn writer_uses_compact_encodings() {
        let mut out = BytesMut::new();
        for n in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            out.clear();
            write_uint(n, &mut out);
            let mut expected = Vec::new();
            rmp::encode::write_uint(&mut expected, n).expect("encode");
            assert_eq!(out[..], expected[..], "{n}");
        }
        for len in [0usize, 31, 32, 255, 256, 65_535, 65_536] {
            let s = "a".repeat(len);
            out.clear();
            write_str(&s, &mut out);
            let mut expected = Vec::new();
            rmp::encode::write_str(&mut expected, &s).expect("encode");
            assert_eq!(out[..], expected[..], "string of {len}");
        }
        for len in [0usize, 15, 16, 65_535, 65_536] {
            out.clear();
            write_array_len(len, &mut out);
            let mut expected = Vec::new();
            rmp::encode::write_array_len(&mut expected, len as u32).expect("encode");
            assert_eq!(out[..], expected[..], "array of {len}");
            out.clear();
            write_map_len(len, &mut out);
            expected.clear();
            rmp::encode::write_map_len(&mut expected, len as u32).expect("encode");
            assert_eq!(out[..], expected[..], "map of {len}");
        }
    }
}
