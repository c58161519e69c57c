//! The four payloads the backplane publishes on Redis, encoded exactly as ASP.NET Core's
//! `RedisProtocol` writes them and decoded as leniently as it reads them.
//!
//! | Payload | Channel | Layout |
//! |---|---|---|
//! | [`Invocation`] | `all`, `group:*`, `user:*`, `connection:*` | `[excluded ids, {protocol: frame}]`, or 4 elements with `invocation id, return channel` |
//! | [`GroupCommand`] | `internal:groups` | `[id, server name, action, group, connection id]` |
//! | [`Ack`] | `internal:ack:<server>` | `[id]` |
//! | [`ClientResultCompletion`] | `internal:return:<server>` | `[protocol, completion frame]` |
//!
//! Encoders write the compact forms MessagePack-CSharp picks, so a .NET node and a Rust
//! node publishing the same message put the same bytes on Redis. Decoders follow the .NET
//! reader: only a minimum array length is required and trailing elements are ignored (that
//! is where future extensions go), integers may come in any width, and blobs may be `bin`
//! or `str`. Everything else, including anything a hostile publisher might send, is a
//! [`DecodeError`]; nothing here panics on input or allocates more than the input justifies.
//!
//! This module knows nothing of hub messages: frames are opaque, already-framed bytes
//! produced by a hub protocol, and received frames are zero-copy slices of the payload.

use bytes::Bytes;
use thiserror::Error;

use crate::msgpack::{self, Reader};

/// Why a payload read from Redis could not be decoded.
///
/// `what` names the envelope field being read when the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload ended inside a value.
    #[error("truncated envelope: {what} needs {needed} more bytes, {available} present")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the value declared or needs.
        needed: u64,
        /// Bytes left in the payload.
        available: usize,
    },
    /// The payload ended between two elements of the top-level array.
    #[error("truncated envelope: {envelope} array of {declared} declared, {present} present")]
    MissingElements {
        /// Which payload kind.
        envelope: &'static str,
        /// Element count in the array header.
        declared: u32,
        /// Elements read before the payload ended.
        present: u32,
    },
    /// An array or map header declared more elements than the rest of the payload could
    /// possibly hold (every element takes at least one byte).
    #[error(
        "truncated envelope: {what} declares {declared} elements, only {available} bytes follow"
    )]
    CountExceedsInput {
        /// The field being read.
        what: &'static str,
        /// Element (or pair) count in the header.
        declared: u32,
        /// Bytes left in the payload.
        available: usize,
    },
    /// The top-level array is shorter than the payload kind requires.
    #[error("{envelope} array has {len} elements, at least {min} required")]
    TooFewElements {
        /// Which payload kind.
        envelope: &'static str,
        /// Element count in the array header.
        len: u32,
        /// Minimum element count for this kind.
        min: u32,
    },
    /// A value of another MessagePack type than the field allows.
    #[error("{what}: expected {expected}, found {found}")]
    WrongType {
        /// The field being read.
        what: &'static str,
        /// What the field allows.
        expected: &'static str,
        /// The MessagePack type found.
        found: &'static str,
    },
    /// An id or action that must not be negative was.
    #[error("{what} is negative ({value})")]
    NegativeInteger {
        /// The field being read.
        what: &'static str,
        /// The value read.
        value: i64,
    },
    /// An integer larger than its field can hold.
    #[error("{what} is {value}, larger than the maximum {max}")]
    IntegerOutOfRange {
        /// The field being read.
        what: &'static str,
        /// The value read.
        value: u64,
        /// The largest value the field holds.
        max: u64,
    },
    /// A group command's action is neither add (1) nor remove (2).
    #[error("unknown group action {0} (expected 1 = add or 2 = remove)")]
    UnknownGroupAction(u64),
    /// A string that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
}

/// Reads the top-level array header and checks the minimum length, as .NET's
/// `ValidateArraySize` does.
fn root_array(r: &mut Reader<'_>, envelope: &'static str, min: u32) -> Result<u32, DecodeError> {
    let len = r.array_len(envelope)?;
    if len < min {
        return Err(DecodeError::TooFewElements { envelope, len, min });
    }
    Ok(len)
}

/// Called before reading top-level element `index`: a payload that ends exactly on an
/// element boundary gets an error saying how many elements were there.
fn element(
    r: &Reader<'_>,
    envelope: &'static str,
    declared: u32,
    index: u32,
) -> Result<(), DecodeError> {
    if r.remaining() == 0 {
        return Err(DecodeError::MissingElements {
            envelope,
            declared,
            present: index,
        });
    }
    Ok(())
}

fn read_u32(r: &mut Reader<'_>, what: &'static str) -> Result<u32, DecodeError> {
    let value = r.uint(what)?;
    u32::try_from(value).map_err(|_| DecodeError::IntegerOutOfRange {
        what,
        value,
        max: u64::from(u32::MAX),
    })
}

/// Where the answer to a client-result invocation must be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResultRoute {
    /// The invocation id inside the framed invocation (22 characters of standard base64
    /// without padding when .NET generated it).
    pub invocation_id: String,
    /// The origin server's return channel *without* the `ChannelPrefix`
    /// (`<hub>:internal:return:<server>`); see
    /// [`Channels::envelope_return_channel`](crate::channels::Channels::envelope_return_channel)
    /// and [`Channels::prefixed`](crate::channels::Channels::prefixed).
    pub return_channel: String,
}

/// A hub message fanned out to connections on other servers.
///
/// Encoded as `[excluded ids, {protocol name: framed message}]`; a client-result
/// invocation adds `invocation id, return channel` as elements 2 and 3.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    /// Connections that must not receive the message (`SendAllExcept`, `SendGroupExcept`).
    pub excluded_connection_ids: Vec<String>,
    /// The message serialized once per hub protocol: `(protocol name, framed bytes)`, in
    /// the publisher's protocol order. Frames are complete transport frames (JSON with its
    /// `0x1E` terminator, MessagePack with its varint length prefix), written to a client
    /// as they are. A .NET receiver drops clients whose protocol is missing here.
    pub messages: Vec<(String, Bytes)>,
    /// Set for a client-result invocation (`InvokeConnectionAsync`), which goes to a
    /// single `connection:*` channel.
    pub client_result: Option<ClientResultRoute>,
}

impl Invocation {
    const ENVELOPE: &'static str = "invocation";

    /// The frame for `protocol` (e.g. `"json"`, `"messagepack"`), if the publisher sent one.
    pub fn frame(&self, protocol: &str) -> Option<&Bytes> {
        self.messages
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, frame)| frame)
    }

    /// Encodes the payload: a 2-element array, or 4 elements with a client result.
    ///
    /// # Panics
    ///
    /// If a string or frame is longer than `u32::MAX` bytes, which MessagePack cannot express.
    pub fn encode(&self) -> Bytes {
        let mut len =
            msgpack::container_header_len(if self.client_result.is_some() { 4 } else { 2 });
        len += msgpack::container_header_len(self.excluded_connection_ids.len());
        len += self
            .excluded_connection_ids
            .iter()
            .map(|id| msgpack::str_len(id.len()))
            .sum::<usize>();
        len += msgpack::container_header_len(self.messages.len());
        len += self
            .messages
            .iter()
            .map(|(name, frame)| msgpack::str_len(name.len()) + msgpack::bin_len(frame.len()))
            .sum::<usize>();
        if let Some(route) = &self.client_result {
            len += msgpack::str_len(route.invocation_id.len())
                + msgpack::str_len(route.return_channel.len());
        }

        let mut out = Vec::with_capacity(len);
        msgpack::write_array_header(&mut out, if self.client_result.is_some() { 4 } else { 2 });
        msgpack::write_array_header(&mut out, self.excluded_connection_ids.len());
        for id in &self.excluded_connection_ids {
            msgpack::write_str(&mut out, id);
        }
        msgpack::write_map_header(&mut out, self.messages.len());
        for (name, frame) in &self.messages {
            msgpack::write_str(&mut out, name);
            msgpack::write_bin(&mut out, frame);
        }
        if let Some(route) = &self.client_result {
            msgpack::write_str(&mut out, &route.invocation_id);
            msgpack::write_str(&mut out, &route.return_channel);
        }
        debug_assert_eq!(out.len(), len);
        Bytes::from(out)
    }

    /// Decodes a payload. Frames in the result are slices of `payload`, not copies.
    ///
    /// Follows the .NET reader: at least 2 elements; elements 2 and 3 are read only when
    /// the array has more than 3; anything after the last element read is ignored. Nil
    /// excluded ids are skipped and a nil frame reads as empty, as .NET tolerates both. A
    /// client-result route is reported only when both its invocation id and return
    /// channel are non-empty strings: .NET treats an empty or nil id as a plain
    /// invocation, and without a return channel the result could not be sent back anyway.
    pub fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let len = root_array(&mut r, Self::ENVELOPE, 2)?;

        element(&r, Self::ENVELOPE, len, 0)?;
        let count = r.array_len("excluded connection ids")?;
        // `count` is bounded by the payload size, but grow as strings are actually read
        // rather than reserving for a count a peer chose.
        let mut excluded_connection_ids = Vec::with_capacity((count as usize).min(16));
        for _ in 0..count {
            if let Some(id) = r.opt_str("excluded connection id")? {
                excluded_connection_ids.push(id.to_owned());
            }
        }

        element(&r, Self::ENVELOPE, len, 1)?;
        let count = r.map_len("protocol map")?;
        let mut messages = Vec::with_capacity((count as usize).min(8));
        for _ in 0..count {
            let protocol = r.str("protocol name")?.to_owned();
            let frame = r.blob("hub message frame")?;
            messages.push((protocol, payload.slice(frame)));
        }

        let mut client_result = None;
        if len > 3 {
            element(&r, Self::ENVELOPE, len, 2)?;
            let invocation_id = r.opt_str("invocation id")?;
            element(&r, Self::ENVELOPE, len, 3)?;
            let return_channel = r.opt_str("return channel")?;
            if let (Some(invocation_id), Some(return_channel)) = (invocation_id, return_channel)
                && !invocation_id.is_empty()
                && !return_channel.is_empty()
            {
                client_result = Some(ClientResultRoute {
                    invocation_id: invocation_id.to_owned(),
                    return_channel: return_channel.to_owned(),
                });
            }
        }

        Ok(Self {
            excluded_connection_ids,
            messages,
            client_result,
        })
    }
}

/// What a [`GroupCommand`] asks the owning server to do. The numbers are the wire values;
/// 0 is unused on purpose in .NET's `GroupAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GroupAction {
    /// Add the connection to the group.
    Add = 1,
    /// Remove the connection from the group.
    Remove = 2,
}

/// Asks whichever server owns `connection_id` to add it to, or remove it from, `group`.
/// Every server receives it on `internal:groups`; the owner acts and answers with an
/// [`Ack`] on `internal:ack:<server_name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommand {
    /// The sender's ack counter, echoed in the [`Ack`]. .NET counts with an `int` from 1
    /// and reads ids back as `int`, so a sender should keep ids within `1..=i32::MAX`.
    pub id: u32,
    /// The sender; the ack goes to its `internal:ack:` channel.
    pub server_name: String,
    /// Add or remove.
    pub action: GroupAction,
    /// The group name, raw (it may contain `:`).
    pub group: String,
    /// The connection to add or remove.
    pub connection_id: String,
}

impl GroupCommand {
    const ENVELOPE: &'static str = "group command";

    /// Encodes the payload: a 5-element array.
    ///
    /// # Panics
    ///
    /// If a string is longer than `u32::MAX` bytes.
    pub fn encode(&self) -> Bytes {
        let len = 1
            + msgpack::uint_len(u64::from(self.id))
            + msgpack::str_len(self.server_name.len())
            + 1
            + msgpack::str_len(self.group.len())
            + msgpack::str_len(self.connection_id.len());
        let mut out = Vec::with_capacity(len);
        msgpack::write_array_header(&mut out, 5);
        msgpack::write_uint(&mut out, u64::from(self.id));
        msgpack::write_str(&mut out, &self.server_name);
        msgpack::write_uint(&mut out, self.action as u64);
        msgpack::write_str(&mut out, &self.group);
        msgpack::write_str(&mut out, &self.connection_id);
        debug_assert_eq!(out.len(), len);
        Bytes::from(out)
    }

    /// Decodes a payload: at least 5 elements, integers in any width, extra elements ignored.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let len = root_array(&mut r, Self::ENVELOPE, 5)?;
        element(&r, Self::ENVELOPE, len, 0)?;
        let id = read_u32(&mut r, "group command id")?;
        element(&r, Self::ENVELOPE, len, 1)?;
        let server_name = r.str("server name")?.to_owned();
        element(&r, Self::ENVELOPE, len, 2)?;
        let action = match r.uint("group action")? {
            1 => GroupAction::Add,
            2 => GroupAction::Remove,
            other => return Err(DecodeError::UnknownGroupAction(other)),
        };
        element(&r, Self::ENVELOPE, len, 3)?;
        let group = r.str("group name")?.to_owned();
        element(&r, Self::ENVELOPE, len, 4)?;
        let connection_id = r.str("connection id")?.to_owned();
        Ok(Self {
            id,
            server_name,
            action,
            group,
            connection_id,
        })
    }
}

/// Confirms a [`GroupCommand`]: the owning server has applied it and, for an add, its
/// subscription to the group channel is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The [`GroupCommand::id`] being confirmed.
    pub id: u32,
}

impl Ack {
    const ENVELOPE: &'static str = "ack";

    /// Encodes the payload: a 1-element array.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(1 + msgpack::uint_len(u64::from(self.id)));
        msgpack::write_array_header(&mut out, 1);
        msgpack::write_uint(&mut out, u64::from(self.id));
        Bytes::from(out)
    }

    /// Decodes a payload: at least 1 element, an integer in any width.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let len = root_array(&mut r, Self::ENVELOPE, 1)?;
        element(&r, Self::ENVELOPE, len, 0)?;
        let id = read_u32(&mut r, "ack id")?;
        Ok(Self { id })
    }
}

/// The answer to a client-result invocation, sent by the server owning the connection
/// back to the origin server's return channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResultCompletion {
    /// The protocol of the client that answered; `completion` is framed by it.
    pub protocol: String,
    /// The client's CompletionMessage as a complete transport frame of that protocol.
    pub completion: Bytes,
}

impl ClientResultCompletion {
    const ENVELOPE: &'static str = "client-result completion";

    /// Encodes the payload: a 2-element array.
    ///
    /// # Panics
    ///
    /// If the protocol name or completion is longer than `u32::MAX` bytes.
    pub fn encode(&self) -> Bytes {
        let len =
            1 + msgpack::str_len(self.protocol.len()) + msgpack::bin_len(self.completion.len());
        let mut out = Vec::with_capacity(len);
        msgpack::write_array_header(&mut out, 2);
        msgpack::write_str(&mut out, &self.protocol);
        msgpack::write_bin(&mut out, &self.completion);
        debug_assert_eq!(out.len(), len);
        Bytes::from(out)
    }

    /// Decodes a payload. The completion is a slice of `payload`, not a copy; a nil
    /// completion reads as empty, as on .NET.
    pub fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let len = root_array(&mut r, Self::ENVELOPE, 2)?;
        element(&r, Self::ENVELOPE, len, 0)?;
        let protocol = r.str("protocol name")?.to_owned();
        element(&r, Self::ENVELOPE, len, 1)?;
        let completion = payload.slice(r.blob("completion frame")?);
        Ok(Self {
            protocol,
            completion,
        })
    }
}
