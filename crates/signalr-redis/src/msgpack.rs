//! The sliver of MessagePack the backplane envelopes need, written and read by hand.
//!
//! The writer emits the most compact form of every value, which is what
//! MessagePack-CSharp's `MessagePackWriter` does: positive fixint, then `uint8`/`uint16`/
//! `uint32`/`uint64`; fixstr, then `str8`/`str16`/`str32`; `bin8`/`bin16`/`bin32`; fixarray
//! and fixmap, then the 16- and 32-bit headers. Byte-for-byte equality with .NET peers
//! depends on these choices, so they live in one place.
//!
//! The reader works over a borrowed slice because envelopes arrive whole (one Redis
//! message each) and frames are handed out as slices of the payload, never copied. Every
//! payload comes from whoever can publish on the Redis server, so the reader trusts nothing:
//! each declared length is checked against the bytes that remain *before* anything is
//! sliced or allocated, and every unexpected marker is an [`DecodeError`], never a panic.
//! It only reads the shapes the envelopes use (integers, strings, binaries, array and map
//! headers); it has no generic "skip a value" because the envelopes never need one (extra
//! trailing elements are simply not read), which also means no recursion a hostile peer
//! could drive deep.

use std::ops::Range;

use crate::envelope::DecodeError;

/// Writes an array header for `len` elements.
pub(crate) fn write_array_header(out: &mut Vec<u8>, len: usize) {
    write_container_header(out, len, 0x90, 0xdc, 0xdd);
}

/// Writes a map header for `len` key/value pairs.
pub(crate) fn write_map_header(out: &mut Vec<u8>, len: usize) {
    write_container_header(out, len, 0x80, 0xde, 0xdf);
}

fn write_container_header(out: &mut Vec<u8>, len: usize, fix: u8, m16: u8, m32: u8) {
    if len <= 15 {
        out.push(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(m16);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(m32);
        out.extend_from_slice(&length_u32(len).to_be_bytes());
    }
}

/// Writes a non-negative integer in its most compact form.
pub(crate) fn write_uint(out: &mut Vec<u8>, value: u64) {
    if value <= 0x7f {
        out.push(value as u8);
    } else if let Ok(v) = u8::try_from(value) {
        out.extend_from_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(value) {
        out.push(0xcd);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(value) {
        out.push(0xce);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Writes a UTF-8 string (fixstr, `str8`, `str16` or `str32`).
pub(crate) fn write_str(out: &mut Vec<u8>, value: &str) {
    let len = value.len();
    if len <= 31 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&length_u32(len).to_be_bytes());
    }
    out.extend_from_slice(value.as_bytes());
}

/// Writes a byte blob (`bin8`, `bin16` or `bin32`; MessagePack has no "fixbin").
pub(crate) fn write_bin(out: &mut Vec<u8>, value: &[u8]) {
    let len = value.len();
    if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xc4, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xc5);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&length_u32(len).to_be_bytes());
    }
    out.extend_from_slice(value);
}

/// Encoded size of a header for a container of `len` elements.
pub(crate) fn container_header_len(len: usize) -> usize {
    match len {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

/// Encoded size of a non-negative integer.
pub(crate) fn uint_len(value: u64) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Encoded size of a string of `len` bytes.
pub(crate) fn str_len(len: usize) -> usize {
    len + match len {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Encoded size of a binary of `len` bytes.
pub(crate) fn bin_len(len: usize) -> usize {
    len + match len {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// MessagePack caps every length at `u32::MAX`. Redis caps a message at 512 MiB, so a
/// longer string or frame is a bug in the caller, not something a peer can cause.
fn length_u32(len: usize) -> u32 {
    u32::try_from(len).expect("MessagePack lengths are limited to u32::MAX bytes")
}

/// A short name for a marker byte, for error messages.
pub(crate) fn marker_name(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7f => "positive fixint",
        0x80..=0x8f => "fixmap",
        0x90..=0x9f => "fixarray",
        0xa0..=0xbf => "fixstr",
        0xc0 => "nil",
        0xc1 => "reserved marker 0xc1",
        0xc2 | 0xc3 => "bool",
        0xc4 => "bin8",
        0xc5 => "bin16",
        0xc6 => "bin32",
        0xc7 => "ext8",
        0xc8 => "ext16",
        0xc9 => "ext32",
        0xca => "float32",
        0xcb => "float64",
        0xcc => "uint8",
        0xcd => "uint16",
        0xce => "uint32",
        0xcf => "uint64",
        0xd0 => "int8",
        0xd1 => "int16",
        0xd2 => "int32",
        0xd3 => "int64",
        0xd4..=0xd8 => "fixext",
        0xd9 => "str8",
        0xda => "str16",
        0xdb => "str32",
        0xdc => "array16",
        0xdd => "array32",
        0xde => "map16",
        0xdf => "map32",
        0xe0..=0xff => "negative fixint",
    }
}

/// A cursor over one envelope. Errors carry `what`: the envelope field being read, so a
/// log line says which part of which payload a peer got wrong.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Takes the next `len` bytes as a range of the input, or fails without moving if
    /// fewer remain. Comparing before slicing is what keeps a declared length of 4 GiB
    /// from turning into an allocation or an out-of-bounds slice.
    fn take(&mut self, len: u64, what: &'static str) -> Result<Range<usize>, DecodeError> {
        let available = self.remaining();
        match usize::try_from(len) {
            Ok(len) if len <= available => {
                let start = self.pos;
                self.pos += len;
                Ok(start..self.pos)
            }
            _ => Err(DecodeError::Truncated {
                what,
                needed: len,
                available,
            }),
        }
    }

    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let range = self.take(N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(&self.input[range]);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.bytes(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.bytes(what)?))
    }

    fn wrong_type(what: &'static str, expected: &'static str, marker: u8) -> DecodeError {
        DecodeError::WrongType {
            what,
            expected,
            found: marker_name(marker),
        }
    }

    /// Reads an array header. The element count is checked against the remaining input
    /// (every element takes at least one byte), as MessagePack-CSharp does, so a caller
    /// can size a buffer from it without trusting the peer.
    pub(crate) fn array_len(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let marker = self.u8(what)?;
        let len = match marker {
            0x90..=0x9f => u32::from(marker & 0x0f),
            0xdc => u32::from(self.u16(what)?),
            0xdd => self.u32(what)?,
            _ => return Err(Self::wrong_type(what, "an array", marker)),
        };
        self.check_count(what, len, 1)?;
        Ok(len)
    }

    /// Reads a map header; each pair takes at least two bytes.
    pub(crate) fn map_len(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let marker = self.u8(what)?;
        let len = match marker {
            0x80..=0x8f => u32::from(marker & 0x0f),
            0xde => u32::from(self.u16(what)?),
            0xdf => self.u32(what)?,
            _ => return Err(Self::wrong_type(what, "a map", marker)),
        };
        self.check_count(what, len, 2)?;
        Ok(len)
    }

    fn check_count(
        &self,
        what: &'static str,
        declared: u32,
        min_bytes_each: u64,
    ) -> Result<(), DecodeError> {
        let available = self.remaining();
        if u64::from(declared) * min_bytes_each > available as u64 {
            return Err(DecodeError::CountExceedsInput {
                what,
                declared,
                available,
            });
        }
        Ok(())
    }

    /// Reads an integer of any width and signedness whose value is not negative.
    pub(crate) fn uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let marker = self.u8(what)?;
        let signed = match marker {
            0x00..=0x7f => return Ok(u64::from(marker)),
            0xcc => return Ok(u64::from(self.u8(what)?)),
            0xcd => return Ok(u64::from(self.u16(what)?)),
            0xce => return Ok(u64::from(self.u32(what)?)),
            0xcf => return self.u64(what),
            0xd0 => i64::from(self.u8(what)? as i8),
            0xd1 => i64::from(self.u16(what)? as i16),
            0xd2 => i64::from(self.u32(what)? as i32),
            0xd3 => self.u64(what)? as i64,
            0xe0..=0xff => i64::from(marker as i8),
            _ => return Err(Self::wrong_type(what, "an integer", marker)),
        };
        u64::try_from(signed).map_err(|_| DecodeError::NegativeInteger {
            what,
            value: signed,
        })
    }

    /// Reads a string, or `None` for nil.
    pub(crate) fn opt_str(&mut self, what: &'static str) -> Result<Option<&'a str>, DecodeError> {
        let marker = self.u8(what)?;
        let len = match marker {
            0xc0 => return Ok(None),
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => u64::from(self.u8(what)?),
            0xda => u64::from(self.u16(what)?),
            0xdb => u64::from(self.u32(what)?),
            _ => return Err(Self::wrong_type(what, "a string", marker)),
        };
        let range = self.take(len, what)?;
        std::str::from_utf8(&self.input[range])
            .map(Some)
            .map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    /// Reads a string; nil is an error.
    pub(crate) fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        match self.opt_str(what)? {
            Some(value) => Ok(value),
            None => Err(DecodeError::WrongType {
                what,
                expected: "a string",
                found: "nil",
            }),
        }
    }

    /// Reads a byte blob and returns where it sits in the input, so the caller can hand
    /// out a zero-copy slice. Accepts `bin*`, `str*` (old-spec writers put blobs in raw
    /// strings) and nil, which reads as empty, as MessagePack-CSharp's `ReadBytes() ?? []`
    /// does on the .NET side.
    pub(crate) fn blob(&mut self, what: &'static str) -> Result<Range<usize>, DecodeError> {
        let marker = self.u8(what)?;
        let len = match marker {
            0xc0 => return Ok(self.pos..self.pos),
            0xc4 => u64::from(self.u8(what)?),
            0xc5 => u64::from(self.u16(what)?),
            0xc6 => u64::from(self.u32(what)?),
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => u64::from(self.u8(what)?),
            0xda => u64::from(self.u16(what)?),
            0xdb => u64::from(self.u32(what)?),
            _ => return Err(Self::wrong_type(what, "a binary", marker)),
        };
        self.take(len, what)
    }
}
