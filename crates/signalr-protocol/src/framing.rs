//! Message boundaries on the byte stream: the record separator of the text protocols
//! (handshake, JSON) and the varint length prefix of the binary one (MessagePack).

/// Ends every handshake message and every JSON hub message (ASCII "record separator").
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Text framing: `payload` followed by [`RECORD_SEPARATOR`].
pub mod text {
    use bytes::BytesMut;

    use super::RECORD_SEPARATOR;

    /// Index of the first record separator in `buf`, i.e. the length of the first record's
    /// payload; `None` if no record is complete yet.
    pub fn find_record_end(buf: &[u8]) -> Option<usize> {
        // A byte-at-a-time scan was a few per cent of a busy server's core, one per message.
        memchr::memchr(RECORD_SEPARATOR, buf)
    }

    /// Append `payload` and a record separator to `out`.
    pub fn write_record(payload: &[u8], out: &mut BytesMut) {
        out.reserve(payload.len() + 1);
        out.extend_from_slice(payload);
        out.extend_from_slice(&[RECORD_SEPARATOR]);
    }
}

/// Binary framing: a varint length (7 bits per byte, least significant group first, 1 to 5
/// bytes, at most 2^31-1) followed by that many payload bytes.
pub mod binary {
    use bytes::BytesMut;

    use crate::error::ProtocolError;

    /// The longest prefix a peer may send.
    pub const MAX_PREFIX_LEN: usize = 5;

    /// The largest payload length a prefix may declare.
    pub const MAX_PAYLOAD_LEN: usize = i32::MAX as usize;

    /// Decode the varint length prefix at the start of `buf`.
    ///
    /// `Ok(None)` if the prefix is incomplete; `Ok(Some((payload_len, prefix_len)))` otherwise.
    /// A prefix longer than 5 bytes or a value above 2^31-1 is [`ProtocolError::InvalidFrame`].
    pub fn read_length_prefix(buf: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
        let mut value: usize = 0;
        for (i, &byte) in buf.iter().take(MAX_PREFIX_LEN).enumerate() {
            if i == MAX_PREFIX_LEN - 1 && byte > 0x07 {
                // The fifth byte holds bits 28..35; anything above 7 (including a continuation
                // bit) would exceed 2^31-1 or need a sixth byte.
                return Err(ProtocolError::InvalidFrame(
                    "the message length prefix is longer than 5 bytes or exceeds 2147483647"
                        .to_owned(),
                ));
            }
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(Some((value, i + 1)));
            }
        }
        Ok(None)
    }

    /// Append `len` as a varint to `out` (the shortest encoding).
    pub fn write_length_prefix(len: usize, out: &mut BytesMut) {
        let mut scratch = [0u8; 10];
        let n = encode_length_prefix(len, &mut scratch);
        out.extend_from_slice(&scratch[..n]);
    }

    /// Encode `len` into `scratch`, returning how many bytes were used.
    pub(crate) fn encode_length_prefix(mut len: usize, scratch: &mut [u8; 10]) -> usize {
        let mut n = 0;
        loop {
            let low = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                scratch[n] = low;
                return n + 1;
            }
            scratch[n] = low | 0x80;
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::error::ProtocolError;

    #[test]
    fn text_records() {
        assert_eq!(text::find_record_end(b"abc\x1edef\x1e"), Some(3));
        assert_eq!(text::find_record_end(b"\x1e"), Some(0));
        assert_eq!(text::find_record_end(b"abc"), None);
        let mut out = BytesMut::new();
        text::write_record(b"{}", &mut out);
        assert_eq!(&out[..], b"{}\x1e");
    }

    #[test]
    fn varint_examples_from_the_spec() {
        for (len, bytes) in [
            (0usize, &[0x00u8][..]),
            (9, &[0x09]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16384, &[0x80, 0x80, 0x01]),
            (i32::MAX as usize, &[0xff, 0xff, 0xff, 0xff, 0x07]),
        ] {
            let mut out = BytesMut::new();
            binary::write_length_prefix(len, &mut out);
            assert_eq!(&out[..], bytes, "writing {len}");
            assert_eq!(
                binary::read_length_prefix(bytes),
                Ok(Some((len, bytes.len()))),
                "reading {len}"
            );
            for cut in 0..bytes.len() {
                assert_eq!(binary::read_length_prefix(&bytes[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn varint_reads_only_the_prefix() {
        assert_eq!(
            binary::read_length_prefix(&[0xac, 0x02, 0xff, 0xff]),
            Ok(Some((300, 2)))
        );
        // Non-shortest encodings are still a valid length.
        assert_eq!(binary::read_length_prefix(&[0x80, 0x00]), Ok(Some((0, 2))));
    }

    #[test]
    fn varint_limits() {
        let six_bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(matches!(
            binary::read_length_prefix(&six_bytes),
            Err(ProtocolError::InvalidFrame(_))
        ));
        // 2^31 needs bit 31, i.e. the fifth byte is 8.
        assert!(matches!(
            binary::read_length_prefix(&[0x80, 0x80, 0x80, 0x80, 0x08]),
            Err(ProtocolError::InvalidFrame(_))
        ));
        assert!(matches!(
            binary::read_length_prefix(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(ProtocolError::InvalidFrame(_))
        ));
        // Even incomplete: four continuation bytes and a fifth one with the high bit set.
        assert!(matches!(
            binary::read_length_prefix(&[0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::InvalidFrame(_))
        ));
    }
}
