//! The handshake: the first message in each direction, always a JSON object followed by the
//! record separator, whichever hub protocol the connection then uses.

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue as JsonRaw;

use crate::error::ProtocolError;
use crate::framing::{RECORD_SEPARATOR, text};

/// The client's handshake: which hub protocol, and which version of it, to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// Protocol name, e.g. `"json"` or `"messagepack"` (see
    /// [`Protocol::from_name`](crate::Protocol::from_name)).
    pub protocol: String,
    /// Protocol version: 1, or 2 when the client negotiated stateful reconnect.
    pub version: u32,
}

#[derive(Deserialize)]
struct RequestFields<'a> {
    #[serde(default, borrow)]
    protocol: Option<&'a JsonRaw>,
    #[serde(default, borrow)]
    version: Option<&'a JsonRaw>,
}

#[derive(Deserialize)]
struct ResponseFields<'a> {
    #[serde(default, borrow)]
    error: Option<&'a JsonRaw>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a JsonRaw>,
}

impl HandshakeRequest {
    /// Parse the handshake request from the front of `buf`, removing its bytes (and only
    /// those: hub messages may follow it in the same buffer).
    ///
    /// `Ok(None)`: incomplete, nothing removed. Both properties are required, in any order;
    /// unknown properties are ignored. More than `max_size` bytes without a record separator is
    /// [`ProtocolError::MessageTooLarge`].
    pub fn parse(
        buf: &mut BytesMut,
        max_size: usize,
    ) -> Result<Option<HandshakeRequest>, ProtocolError> {
        let Some(payload) = take_record(buf, max_size)? else {
            return Ok(None);
        };
        let fields: RequestFields<'_> = parse_object(&payload)?;
        let protocol = fields.protocol.ok_or_else(|| missing("protocol"))?;
        let protocol: String = serde_json::from_str(protocol.get()).map_err(|_| {
            ProtocolError::InvalidHandshake("the 'protocol' property must be a string".to_owned())
        })?;
        let version = fields.version.ok_or_else(|| missing("version"))?;
        let version: u32 = serde_json::from_str(version.get()).map_err(|_| {
            ProtocolError::InvalidHandshake(
                "the 'version' property must be a non-negative integer".to_owned(),
            )
        })?;
        Ok(Some(HandshakeRequest { protocol, version }))
    }

    /// Append `{"protocol":"…","version":N}` and a record separator to `out`.
    pub fn write(&self, out: &mut BytesMut) {
        out.extend_from_slice(b"{\"protocol\":");
        write_json_str(&self.protocol, out);
        out.extend_from_slice(format!(",\"version\":{}}}", self.version).as_bytes());
        out.put_u8(RECORD_SEPARATOR);
    }
}

/// The server's answer to the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse {
    /// Why the handshake was refused; `None` on success.
    pub error: Option<String>,
}

impl HandshakeResponse {
    /// A successful response.
    pub fn ok() -> HandshakeResponse {
        HandshakeResponse { error: None }
    }

    /// A refusal with the given reason.
    pub fn error(reason: impl Into<String>) -> HandshakeResponse {
        HandshakeResponse {
            error: Some(reason.into()),
        }
    }

    /// Append exactly `{}` (success) or `{"error":"…"}` (failure) and a record separator.
    ///
    /// Never a `type` property: the JavaScript and .NET clients take that as a hub message and
    /// fail the connection.
    pub fn write(&self, out: &mut BytesMut) {
        match &self.error {
            None => out.extend_from_slice(b"{}"),
            Some(error) => {
                out.extend_from_slice(b"{\"error\":");
                write_json_str(error, out);
                out.put_u8(b'}');
            }
        }
        out.put_u8(RECORD_SEPARATOR);
    }

    /// Parse a handshake response from the front of `buf` (for clients and load generators),
    /// removing its bytes. `Ok(None)`: incomplete. Unknown properties are tolerated, but a
    /// `type` property is an error, as it is for the official clients.
    pub fn parse(buf: &mut BytesMut) -> Result<Option<HandshakeResponse>, ProtocolError> {
        let Some(payload) = take_record(buf, usize::MAX)? else {
            return Ok(None);
        };
        let fields: ResponseFields<'_> = parse_object(&payload)?;
        if fields.kind.is_some() {
            return Err(ProtocolError::InvalidHandshake(
                "expected a handshake response from the server, found a hub message".to_owned(),
            ));
        }
        let error = match fields.error {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => Some(serde_json::from_str(raw.get()).map_err(|_| {
                ProtocolError::InvalidHandshake("the 'error' property must be a string".to_owned())
            })?),
        };
        Ok(Some(HandshakeResponse { error }))
    }
}

fn take_record(buf: &mut BytesMut, max_size: usize) -> Result<Option<BytesMut>, ProtocolError> {
    let window = buf.len().min(max_size.saturating_add(1));
    let Some(end) = text::find_record_end(&buf[..window]) else {
        if buf.len() > max_size {
            return Err(ProtocolError::MessageTooLarge { max: max_size });
        }
        return Ok(None);
    };
    let mut record = buf.split_to(end + 1);
    record.truncate(end);
    Ok(Some(record))
}

fn parse_object<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, ProtocolError> {
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ProtocolError::InvalidHandshake(
            "the handshake must be a JSON object".to_owned(),
        ));
    }
    serde_json::from_slice(payload)
        .map_err(|err| ProtocolError::InvalidHandshake(format!("invalid JSON: {err}")))
}

fn missing(field: &str) -> ProtocolError {
    ProtocolError::InvalidHandshake(format!("missing required property '{field}'"))
}

fn write_json_str(s: &str, out: &mut BytesMut) {
    // Writing a string into memory cannot fail; the fallback only keeps the output valid JSON.
    if serde_json::to_writer(out.writer(), s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[test]
    fn parses_both_protocols() {
        for (text, protocol) in [
            (&b"{\"protocol\":\"json\",\"version\":1}\x1e"[..], "json"),
            (
                b"{\"protocol\":\"messagepack\",\"version\":1}\x1e",
                "messagepack",
            ),
        ] {
            let mut b = buf(text);
            assert_eq!(
                HandshakeRequest::parse(&mut b, 1024),
                Ok(Some(HandshakeRequest {
                    protocol: protocol.to_owned(),
                    version: 1
                }))
            );
            assert!(b.is_empty());
        }
    }

    #[test]
    fn messagepack_handshake_hex_from_the_spec() {
        let bytes = [
            0x7B, 0x22, 0x70, 0x72, 0x6F, 0x74, 0x6F, 0x63, 0x6F, 0x6C, 0x22, 0x3A, 0x22, 0x6D,
            0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x70, 0x61, 0x63, 0x6B, 0x22, 0x2C, 0x22, 0x76,
            0x65, 0x72, 0x73, 0x69, 0x6F, 0x6E, 0x22, 0x3A, 0x31, 0x7D, 0x1E,
        ];
        let request = HandshakeRequest {
            protocol: "messagepack".to_owned(),
            version: 1,
        };
        let mut out = BytesMut::new();
        request.write(&mut out);
        assert_eq!(&out[..], &bytes[..]);
        assert_eq!(HandshakeRequest::parse(&mut out, 1024), Ok(Some(request)));
    }

    #[test]
    fn any_order_extra_properties_and_trailing_messages() {
        let mut b =
            buf(b" {\"x\":[1,{}],\"version\":2,\"protocol\":\"json\"} \x1e{\"type\":6}\x1e");
        assert_eq!(
            HandshakeRequest::parse(&mut b, 1024),
            Ok(Some(HandshakeRequest {
                protocol: "json".to_owned(),
                version: 2
            }))
        );
        assert_eq!(&b[..], b"{\"type\":6}\x1e");
    }

    #[test]
    fn incomplete_input_is_left_alone() {
        let full = b"{\"protocol\":\"json\",\"version\":1}\x1e";
        for cut in 0..full.len() {
            let mut b = buf(&full[..cut]);
            assert_eq!(HandshakeRequest::parse(&mut b, 1024), Ok(None));
            assert_eq!(b.len(), cut);
            b.extend_from_slice(&full[cut..]);
            assert!(matches!(HandshakeRequest::parse(&mut b, 1024), Ok(Some(_))));
        }
    }

    #[test]
    fn malformed_requests() {
        for text in [
            &b"{\"version\":1}\x1e"[..],
            b"{\"protocol\":\"json\"}\x1e",
            b"{\"protocol\":1,\"version\":1}\x1e",
            b"{\"protocol\":\"json\",\"version\":\"1\"}\x1e",
            b"{\"protocol\":\"json\",\"version\":-1}\x1e",
            b"{\"protocol\":\"json\",\"version\":1.5}\x1e",
            b"{\"protocol\":\"json\",\"version\":1\x1e",
            b"[\"json\",1]\x1e",
            b"hello\x1e",
            b"\x1e",
        ] {
            let mut b = buf(text);
            assert!(
                matches!(
                    HandshakeRequest::parse(&mut b, 1024),
                    Err(ProtocolError::InvalidHandshake(_))
                ),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        let mut b = buf(b"{\"version\":1}\x1e");
        let err = HandshakeRequest::parse(&mut b, 1024).expect_err("missing protocol");
        assert_eq!(
            err.to_string(),
            "Invalid handshake message: missing required property 'protocol'"
        );
    }

    #[test]
    fn oversize_requests() {
        let mut b = buf(&[b' '; 33]);
        assert_eq!(
            HandshakeRequest::parse(&mut b, 32),
            Err(ProtocolError::MessageTooLarge { max: 32 })
        );
        let mut b = buf(&[b' '; 32]);
        assert_eq!(HandshakeRequest::parse(&mut b, 32), Ok(None));
        // The separator arrives only after the limit.
        let mut b = buf(b"{\"protocol\":\"json\",\"version\":1}\x1e");
        assert_eq!(
            HandshakeRequest::parse(&mut b, 10),
            Err(ProtocolError::MessageTooLarge { max: 10 })
        );
    }

    #[test]
    fn responses_are_exact() {
        let mut out = BytesMut::new();
        HandshakeResponse::default().write(&mut out);
        assert_eq!(&out[..], &[0x7b, 0x7d, 0x1e]);
        let mut out = BytesMut::new();
        HandshakeResponse::error("The protocol 'x\"' is not supported.").write(&mut out);
        assert_eq!(
            &out[..],
            b"{\"error\":\"The protocol 'x\\\"' is not supported.\"}\x1e"
        );
        assert_eq!(
            HandshakeResponse::parse(&mut out),
            Ok(Some(HandshakeResponse::error(
                "The protocol 'x\"' is not supported."
            )))
        );
    }

    #[test]
    fn parses_responses() {
        let mut b = buf(b"{\"minorVersion\":1}\x1e{\"type\":6}\x1e");
        assert_eq!(
            HandshakeResponse::parse(&mut b),
            Ok(Some(HandshakeResponse::ok()))
        );
        assert_eq!(&b[..], b"{\"type\":6}\x1e");
        let mut b = buf(b"{}");
        assert_eq!(HandshakeResponse::parse(&mut b), Ok(None));
        let mut b = buf(b"{\"type\":6}\x1e");
        assert!(matches!(
            HandshakeResponse::parse(&mut b),
            Err(ProtocolError::InvalidHandshake(_))
        ));
        let mut b = buf(b"{\"error\":5}\x1e");
        assert!(HandshakeResponse::parse(&mut b).is_err());
    }
}
