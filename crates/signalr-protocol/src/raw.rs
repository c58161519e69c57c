//! [`RawValue`]: one application value still in its wire encoding, plus the conversions between
//! that encoding, Rust types, and the other protocol's encoding.

use std::fmt;
use std::io::Write as _;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, EncodeError};
use crate::msgpack;
use crate::protocol::Protocol;

/// The nesting limit for values decoded or transcoded here, the same as serde_json's own, so
/// both protocols accept the same shapes and no input can exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 128;

/// One value (an argument, a stream item, a result) in the encoding of a hub protocol.
///
/// Parsers hand these out as zero-copy slices of the received frame, so forwarding a value to
/// connections using the same protocol costs no decoding at all.
#[derive(Clone, PartialEq)]
pub struct RawValue {
    protocol: Protocol,
    bytes: Bytes,
}

impl RawValue {
    /// Wrap bytes that already hold exactly one complete value in `protocol`'s encoding.
    ///
    /// The bytes are not validated; writing a message that contains an invalid value produces
    /// a message the peer will reject.
    pub fn from_encoded(protocol: Protocol, bytes: Bytes) -> RawValue {
        RawValue { protocol, bytes }
    }

    /// The encoding of the bytes.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The encoded value.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoded value, by value.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The null value: JSON `null` or MessagePack nil (`0xc0`).
    pub fn null(protocol: Protocol) -> RawValue {
        let bytes: &'static [u8] = match protocol {
            Protocol::Json => b"null",
            Protocol::MessagePack => &[0xc0],
        };
        RawValue::from_encoded(protocol, Bytes::from_static(bytes))
    }

    /// Whether this is JSON `null` / MessagePack nil.
    pub fn is_null(&self) -> bool {
        match self.protocol {
            Protocol::Json => self.bytes.trim_ascii() == b"null",
            Protocol::MessagePack => self.bytes[..] == [0xc0],
        }
    }

    /// Serialize `value` in `protocol`'s encoding.
    ///
    /// MessagePack writes structs as maps keyed by field name, because the JavaScript and .NET
    /// clients bind objects by name, not by position.
    pub fn encode<T: Serialize + ?Sized>(
        protocol: Protocol,
        value: &T,
    ) -> Result<RawValue, EncodeError> {
        let bytes = match protocol {
            Protocol::Json => serde_json::to_vec(value)?,
            Protocol::MessagePack => {
                let mut buf = Vec::with_capacity(32);
                value.serialize(&mut rmp_serde::Serializer::new(&mut buf).with_struct_map())?;
                buf
            }
        };
        Ok(RawValue::from_encoded(protocol, Bytes::from(bytes)))
    }

    /// Deserialize the value into `T`.
    ///
    /// MessagePack input may encode structs either as maps (by name) or as arrays (by
    /// position).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        match self.protocol {
            Protocol::Json => Ok(serde_json::from_slice(&self.bytes)?),
            Protocol::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(&self.bytes[..]);
                de.set_max_depth(MAX_DEPTH);
                Ok(T::deserialize(&mut de)?)
            }
        }
    }

    /// The same value in `protocol`'s encoding.
    ///
    /// Same protocol: a cheap clone. Otherwise the value goes through an intermediate tree:
    /// MessagePack binary becomes a base64 string and timestamps become ISO 8601 strings (what
    /// .NET's JSON serializer produces for `byte[]` and `DateTime`); other extension types have
    /// no JSON form and are an error.
    pub fn to_protocol(&self, protocol: Protocol) -> Result<RawValue, EncodeError> {
        if protocol == self.protocol {
            return Ok(self.clone());
        }
        let bytes = match protocol {
            Protocol::MessagePack => json_to_msgpack(&self.bytes)?,
            Protocol::Json => msgpack_to_json(&self.bytes)?,
        };
        Ok(RawValue::from_encoded(protocol, Bytes::from(bytes)))
    }

    /// The elements of this value, which must be an array, as zero-copy slices.
    pub fn array_elements(&self) -> Result<Vec<RawValue>, DecodeError> {
        match self.protocol {
            Protocol::Json => {
                let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&self.bytes)?;
                Ok(items
                    .into_iter()
                    .map(|item| {
                        RawValue::from_encoded(
                            Protocol::Json,
                            self.bytes.slice_ref(item.get().as_bytes()),
                        )
                    })
                    .collect())
            }
            Protocol::MessagePack => {
                let ranges = msgpack::array_element_ranges(&self.bytes)
                    .map_err(|err| DecodeError::new(msgpack::error_detail(err)))?;
                Ok(ranges
                    .into_iter()
                    .map(|range| {
                        RawValue::from_encoded(Protocol::MessagePack, self.bytes.slice(range))
                    })
                    .collect())
            }
        }
    }
}

impl fmt::Debug for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PREVIEW: usize = 96;
        let shown = &self.bytes[..self.bytes.len().min(PREVIEW)];
        let more = if self.bytes.len() > PREVIEW {
            "…"
        } else {
            ""
        };
        match self.protocol {
            Protocol::Json => write!(
                f,
                "RawValue(json, {}{more})",
                String::from_utf8_lossy(shown)
            ),
            Protocol::MessagePack => {
                f.write_str("RawValue(messagepack,")?;
                for b in shown {
                    write!(f, " {b:02x}")?;
                }
                write!(f, "{more})")
            }
        }
    }
}

fn json_to_msgpack(json: &[u8]) -> Result<Vec<u8>, EncodeError> {
    // serde_json's recursion limit bounds the depth of the tree built here.
    let value: rmpv::Value = serde_json::from_slice(json)?;
    let mut out = Vec::with_capacity(json.len());
    rmpv::encode::write_value(&mut out, &value).map_err(EncodeError::new)?;
    Ok(out)
}

fn msgpack_to_json(mut bytes: &[u8]) -> Result<Vec<u8>, EncodeError> {
    // rmpv reads the reserved marker as nil and ignores trailing bytes; refuse both first.
    msgpack::validate_value(bytes).map_err(|err| {
        EncodeError::new(format!(
            "invalid MessagePack value: {}",
            msgpack::error_detail(err)
        ))
    })?;
    // `validate_value` bounded the nesting to MAX_DEPTH; rmpv spends two units of its budget
    // per array or map level (and up to three on an extension leaf), so giving it MAX_DEPTH
    // would refuse values nested more than about 62 levels that the parsers accept.
    let value = rmpv::decode::read_value_with_max_depth(&mut bytes, 2 * MAX_DEPTH + 2)
        .map_err(|err| EncodeError::new(format!("invalid MessagePack value: {err}")))?;
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    write_json(&value, &mut out)?;
    Ok(out)
}

fn write_json(value: &rmpv::Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use rmpv::Value;
    match value {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => {
            if let Some(n) = i.as_i64() {
                write!(out, "{n}")?;
            } else if let Some(n) = i.as_u64() {
                write!(out, "{n}")?;
            }
        }
        // serde_json writes non-finite floats as null, like JavaScript's JSON.stringify.
        Value::F32(x) => serde_json::to_writer(&mut *out, x)?,
        Value::F64(x) => serde_json::to_writer(&mut *out, x)?,
        Value::String(s) => {
            let text = s.as_str().ok_or_else(|| {
                EncodeError::new("a MessagePack string is not valid UTF-8 and cannot become JSON")
            })?;
            serde_json::to_writer(&mut *out, text)?;
        }
        Value::Binary(data) => {
            out.push(b'"');
            base64_encode(data, out);
            out.push(b'"');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out)?;
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            out.push(b'{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_key(key, out)?;
                out.push(b':');
                write_json(item, out)?;
            }
            out.push(b'}');
        }
        Value::Ext(kind, data) => {
            let Some((seconds, nanos)) = decode_timestamp(*kind, data) else {
                return Err(EncodeError::new(format!(
                    "MessagePack extension type {kind} has no JSON equivalent"
                )));
            };
            out.push(b'"');
            write_iso8601(seconds, nanos, out)?;
            out.push(b'"');
        }
    }
    Ok(())
}

fn write_json_key(key: &rmpv::Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use rmpv::Value;
    match key {
        Value::String(_) => write_json(key, out),
        // JSON keys are strings; scalar keys keep their JSON spelling, as JavaScript would.
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::F32(_) | Value::F64(_) => {
            let mut text = Vec::new();
            write_json(key, &mut text)?;
            out.push(b'"');
            out.extend_from_slice(&text);
            out.push(b'"');
            Ok(())
        }
        _ => Err(EncodeError::new(
            "a MessagePack map key that is not a string or number cannot become JSON",
        )),
    }
}

fn base64_encode(data: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = [
            ALPHABET[(n >> 18) as usize & 63],
            ALPHABET[(n >> 12) as usize & 63],
            ALPHABET[(n >> 6) as usize & 63],
            ALPHABET[n as usize & 63],
        ];
        let keep = chunk.len() + 1;
        out.extend_from_slice(&symbols[..keep]);
        out.extend(std::iter::repeat_n(b'=', 4 - keep));
    }
}

/// The MessagePack timestamp extension (type -1) in its 32, 64 and 96-bit forms.
fn decode_timestamp(kind: i8, data: &[u8]) -> Option<(i64, u32)> {
    if kind != -1 {
        return None;
    }
    match data.len() {
        4 => Some((i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0)),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            Some(((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32))
        }
        12 => {
            let nanos = u32::from_be_bytes(data[..4].try_into().ok()?);
            let seconds = i64::from_be_bytes(data[4..].try_into().ok()?);
            Some((seconds, nanos))
        }
        _ => None,
    }
}

fn write_iso8601(seconds: i64, nanos: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )?;
    if nanos > 0 {
        let fraction = format!("{:09}", nanos.min(999_999_999));
        write!(out, ".{}", fraction.trim_end_matches('0'))?;
    }
    out.push(b'Z');
    Ok(())
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Chat {
        user: String,
        text: String,
        likes: u32,
        tags: Vec<String>,
        reply_to: Option<u64>,
    }

    fn sample() -> Chat {
        Chat {
            user: "alice".into(),
            text: "hello \"world\" ✓".into(),
            likes: 300,
            tags: vec!["a".into(), "b".into()],
            reply_to: None,
        }
    }

    #[test]
    fn encode_decode_round_trip_in_both_protocols() {
        for p in Protocol::ALL {
            let raw = RawValue::encode(p, &sample()).expect("encode");
            assert_eq!(raw.protocol(), p);
            assert_eq!(raw.decode::<Chat>(), Ok(sample()));
            let n = RawValue::encode(p, &-5i64).expect("encode");
            assert_eq!(n.decode::<i64>(), Ok(-5));
            let s = p.encode_value("hi").expect("encode");
            assert_eq!(s.decode::<String>().as_deref(), Ok("hi"));
        }
    }

    #[test]
    fn messagepack_structs_are_maps_with_field_names() {
        #[derive(Serialize)]
        struct Point {
            x: u8,
            y: u8,
        }
        let raw = RawValue::encode(Protocol::MessagePack, &Point { x: 1, y: 2 }).expect("encode");
        assert_eq!(&raw.as_bytes()[..], &[0x82, 0xa1, b'x', 1, 0xa1, b'y', 2]);
        let json = RawValue::encode(Protocol::Json, &Point { x: 1, y: 2 }).expect("encode");
        assert_eq!(&json.as_bytes()[..], br#"{"x":1,"y":2}"#);
    }

    #[test]
    fn messagepack_decode_accepts_structs_as_maps_and_arrays() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Point {
            x: u8,
            y: u8,
        }
        let map = RawValue::from_encoded(
            Protocol::MessagePack,
            Bytes::from_static(&[0x82, 0xa1, b'y', 2, 0xa1, b'x', 1]),
        );
        assert_eq!(map.decode::<Point>(), Ok(Point { x: 1, y: 2 }));
        let array =
            RawValue::from_encoded(Protocol::MessagePack, Bytes::from_static(&[0x92, 1, 2]));
        assert_eq!(array.decode::<Point>(), Ok(Point { x: 1, y: 2 }));
    }

    #[test]
    fn decode_errors_are_readable() {
        let raw = RawValue::from_encoded(Protocol::Json, Bytes::from_static(b"\"x\""));
        let err = raw.decode::<u32>().expect_err("type mismatch");
        assert!(err.to_string().contains("expected u32"), "{err}");
        let raw = RawValue::from_encoded(Protocol::MessagePack, Bytes::from_static(&[0xa1, b'x']));
        assert!(raw.decode::<u32>().is_err());
        let truncated = RawValue::from_encoded(Protocol::MessagePack, Bytes::from_static(&[0xdd]));
        assert!(truncated.decode::<Vec<u8>>().is_err());
    }

    #[test]
    fn nulls() {
        for p in Protocol::ALL {
            let null = RawValue::null(p);
            assert!(null.is_null());
            assert_eq!(null.decode::<Option<u32>>(), Ok(None));
            assert_eq!(RawValue::encode(p, &()).ok(), Some(null.clone()));
            assert_eq!(RawValue::encode(p, &None::<u8>).ok(), Some(null));
            assert!(!RawValue::encode(p, &0u8).expect("encode").is_null());
        }
        assert_eq!(&RawValue::null(Protocol::Json).as_bytes()[..], b"null");
        assert_eq!(
            &RawValue::null(Protocol::MessagePack).as_bytes()[..],
            &[0xc0]
        );
    }

    #[test]
    fn transcoding_round_trips() {
        let json = RawValue::encode(Protocol::Json, &sample()).expect("encode");
        let mp = json.to_protocol(Protocol::MessagePack).expect("to msgpack");
        assert_eq!(mp.protocol(), Protocol::MessagePack);
        assert_eq!(mp.decode::<Chat>(), Ok(sample()));
        let back = mp.to_protocol(Protocol::Json).expect("to json");
        // Key order and spelling survive the round trip.
        assert_eq!(back, json);
        assert_eq!(
            json.to_protocol(Protocol::Json).as_ref(),
            Ok(&json),
            "same protocol is a clone"
        );
    }

    #[test]
    fn transcoding_scalars_uses_compact_forms() {
        let raw = RawValue::from_encoded(
            Protocol::Json,
            Bytes::from_static(b"[1,-1,300,1.5,null,true,\"s\"]"),
        );
        let mp = raw.to_protocol(Protocol::MessagePack).expect("to msgpack");
        assert_eq!(
            &mp.as_bytes()[..],
            &[
                0x97, 0x01, 0xff, 0xcd, 0x01, 0x2c, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xc0, 0xc3,
                0xa1, b's'
            ]
        );
        let back = mp.to_protocol(Protocol::Json).expect("to json");
        assert_eq!(&back.as_bytes()[..], b"[1,-1,300,1.5,null,true,\"s\"]");
    }

    #[test]
    fn transcoding_messagepack_only_types_to_json() {
        // {1: bin[1,2,3,4], "t": timestamp 2021-01-01T00:00:00.5Z, "f": 0.5f32}
        let mut bytes = vec![0x83, 0x01, 0xc4, 0x04, 1, 2, 3, 4, 0xa1, b't', 0xd7, 0xff];
        let secs: u64 = 1_609_459_200;
        let nanos: u64 = 500_000_000;
        bytes.extend_from_slice(&((nanos << 34) | secs).to_be_bytes());
        bytes.extend_from_slice(&[0xa1, b'f', 0xca, 0x3f, 0x00, 0x00, 0x00]);
        let raw = RawValue::from_encoded(Protocol::MessagePack, Bytes::from(bytes));
        let json = raw.to_protocol(Protocol::Json).expect("to json");
        assert_eq!(
            std::str::from_utf8(json.as_bytes()).ok(),
            Some(r#"{"1":"AQIDBA==","t":"2021-01-01T00:00:00.5Z","f":0.5}"#)
        );
        let ext = RawValue::from_encoded(
            Protocol::MessagePack,
            Bytes::from_static(&[0xd4, 0x05, 0x00]),
        );
        assert!(ext.to_protocol(Protocol::Json).is_err());
        let bad = RawValue::from_encoded(Protocol::MessagePack, Bytes::from_static(&[0xdc, 0xff]));
        assert!(bad.to_protocol(Protocol::Json).is_err());
        let bad = RawValue::from_encoded(Protocol::Json, Bytes::from_static(b"[1,"));
        assert!(bad.to_protocol(Protocol::MessagePack).is_err());
    }

    #[test]
    fn transcoding_accepts_every_depth_the_validator_accepts() {
        // Found by the fuzz targets' transcoding check: from about 62 levels up, MessagePack ->
        // JSON failed with "depth limit exceeded", although the parsers accept values nested up
        // to MAX_DEPTH and JSON -> MessagePack worked.
        for levels in [63, 64, 100, MAX_DEPTH - 1] {
            // `levels` arrays around a timestamp (the leaf rmpv spends the most budget on).
            let mut bytes = vec![0x91; levels];
            bytes.extend_from_slice(&[0xd6, 0xff, 0, 0, 0, 0]);
            let raw = RawValue::from_encoded(Protocol::MessagePack, Bytes::from(bytes));
            let json = raw
                .to_protocol(Protocol::Json)
                .unwrap_or_else(|err| panic!("{levels} levels: {err}"));
            let mut expected = "[".repeat(levels);
            expected.push_str("\"1970-01-01T00:00:00Z\"");
            expected.push_str(&"]".repeat(levels));
            assert_eq!(std::str::from_utf8(json.as_bytes()), Ok(expected.as_str()));
            assert!(json.to_protocol(Protocol::MessagePack).is_ok(), "{levels}");
        }
        // Past the limit it is still refused, by the validator.
        let mut bytes = vec![0x91; MAX_DEPTH];
        bytes.push(0xc0);
        let raw = RawValue::from_encoded(Protocol::MessagePack, Bytes::from(bytes));
        assert!(raw.to_protocol(Protocol::Json).is_err());
    }

    #[test]
    fn json_floats_transcode_to_the_nearest_double() {
        // Found by fuzzing: serde_json's default float parser is not correctly rounded, so
        // this number reached MessagePack clients 1 ULP away from the value every other
        // parser (and .NET) reads, and did not survive JSON -> MessagePack -> JSON.
        for text in [
            "3.333333333333333e+117",
            "2.2250738585072014e-308",
            "0.1",
            "1e23",
        ] {
            let expected: f64 = text.parse().expect("a float");
            let json =
                RawValue::from_encoded(Protocol::Json, Bytes::copy_from_slice(text.as_bytes()));
            assert_eq!(json.decode::<f64>(), Ok(expected), "{text}");
            let mp = json.to_protocol(Protocol::MessagePack).expect("to msgpack");
            assert_eq!(mp.decode::<f64>(), Ok(expected), "{text}");
            let back = mp.to_protocol(Protocol::Json).expect("to json");
            assert_eq!(back.decode::<f64>(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn base64_and_dates() {
        let mut out = Vec::new();
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
        ] {
            out.clear();
            base64_encode(input, &mut out);
            assert_eq!(out, expected.as_bytes());
        }
        out.clear();
        write_iso8601(0, 0, &mut out).expect("write");
        assert_eq!(out, b"1970-01-01T00:00:00Z");
        out.clear();
        write_iso8601(951_782_400 + 86_399, 120_000_000, &mut out).expect("write");
        assert_eq!(out, b"2000-02-29T23:59:59.12Z");
        out.clear();
        write_iso8601(-1, 0, &mut out).expect("write");
        assert_eq!(out, b"1969-12-31T23:59:59Z");
    }

    #[test]
    fn array_elements_are_slices() {
        let json = RawValue::from_encoded(
            Protocol::Json,
            Bytes::from_static(b"[ \"a\" , {\"b\":[1,2]},null ]"),
        );
        let parts = json.array_elements().expect("array");
        let texts: Vec<&[u8]> = parts.iter().map(|p| &p.as_bytes()[..]).collect();
        assert_eq!(texts, vec![&b"\"a\""[..], b"{\"b\":[1,2]}", b"null"]);
        assert!(parts[2].is_null());

        let mp = RawValue::encode(Protocol::MessagePack, &("a", vec![1, 2], ())).expect("encode");
        let parts = mp.array_elements().expect("array");
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].decode::<String>().as_deref(), Ok("a"));
        assert_eq!(parts[1].decode::<Vec<u8>>(), Ok(vec![1, 2]));
        assert!(parts[2].is_null());

        for p in Protocol::ALL {
            let not_array = RawValue::encode(p, &5).expect("encode");
            assert!(not_array.array_elements().is_err());
            let empty = RawValue::encode(p, &Vec::<u8>::new()).expect("encode");
            assert_eq!(empty.array_elements(), Ok(vec![]));
        }
    }

    #[test]
    fn debug_shows_protocol_and_preview() {
        let json = RawValue::from_encoded(Protocol::Json, Bytes::from_static(b"[\"hi\"]"));
        assert_eq!(format!("{json:?}"), "RawValue(json, [\"hi\"])");
        let mp = RawValue::from_encoded(Protocol::MessagePack, Bytes::from_static(&[0x91, 0x06]));
        assert_eq!(format!("{mp:?}"), "RawValue(messagepack, 91 06)");
    }
}
