//! The send stamp a sender writes into every payload, and the cheap scan receivers run to find
//! it again.
//!
//! A payload is an ASCII string `@STEP,MICROS;` padded with `x` to the requested length. The
//! stamp travels inside the hub message unchanged whatever the server does to the envelope
//! (JSON, MessagePack, Socket.IO), so a receiver never parses the envelope: it looks for `@`,
//! reads two numbers, and knows which rate step the message belongs to and when it was sent.
//!
//! Times are microseconds of the wall clock (`SystemTime`), so several load-generator processes
//! on one machine share the same clock; over a run of minutes, clock slewing is far below the
//! resolution that matters here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A payload of `len` bytes (at least the stamp itself) stamped with `step` and `sent_micros`.
pub fn payload(step: u32, sent_micros: u64, len: usize) -> String {
    let mut text = format!("@{step},{sent_micros};");
    while text.len() < len {
        text.push('x');
    }
    text
}

/// A stamp found in a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The rate step the message was sent in.
    pub step: u32,
    /// When it was sent, in microseconds since the Unix epoch.
    pub sent_micros: u64,
}

/// The first stamp in `bytes`. Bytes that merely look like the start of one (an `@` in a
/// MessagePack length, say) are skipped.
pub fn find(bytes: &[u8]) -> Option<Stamp> {
    memchr::memchr_iter(b'@', bytes).find_map(|at| parse_at(&bytes[at + 1..]))
}

/// Like [`find`], trying first where the stamp was in the previous frame (`hint`, updated):
/// the frames of one message are alike, so a receiver mostly checks one byte instead of
/// searching.
pub fn find_near(bytes: &[u8], hint: &mut usize) -> Option<Stamp> {
    if bytes.get(*hint) == Some(&b'@')
        && let Some(stamp) = parse_at(&bytes[*hint + 1..])
    {
        return Some(stamp);
    }
    let (at, stamp) = memchr::memchr_iter(b'@', bytes)
        .find_map(|at| parse_at(&bytes[at + 1..]).map(|stamp| (at, stamp)))?;
    *hint = at;
    Some(stamp)
}

/// `STEP,MICROS;` at the start of `bytes`.
fn parse_at(bytes: &[u8]) -> Option<Stamp> {
    let (step, rest) = number(bytes, b',')?;
    let (sent_micros, _) = number(rest, b';')?;
    Some(Stamp {
        step: u32::try_from(step).ok()?,
        sent_micros,
    })
}

/// Decimal digits up to `end`; `None` unless at least one digit is followed by `end`.
fn number(bytes: &[u8], end: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(21) {
        match b {
            b'0'..=b'9' => value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?,
            _ if b == end && i > 0 => return Some((value, &bytes[i + 1..])),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let text = payload(3, 1_700_000_000_123_456, 48);
        assert_eq!(text.len(), 48);
        assert!(text.starts_with("@3,1700000000123456;x"));
        let frame = format!("{{\"type\":1,\"target\":\"m\",\"arguments\":[\"{text}\"]}}\x1e");
        assert_eq!(
            find(frame.as_bytes()),
            Some(Stamp {
                step: 3,
                sent_micros: 1_700_000_000_123_456
            })
        );
    }

    #[test]
    fn a_hint_is_tried_first_and_follows_the_stamp() {
        let mut hint = 0;
        let first = b"xx@1,2;";
        assert_eq!(find_near(first, &mut hint).map(|s| s.sent_micros), Some(2));
        assert_eq!(hint, 2);
        assert_eq!(find_near(b"yy@3,4;", &mut hint).map(|s| s.step), Some(3));
        // Not where the hint says: searched, and the hint moves.
        assert_eq!(find_near(b"@5,6;xx", &mut hint).map(|s| s.step), Some(5));
        assert_eq!(hint, 0);
        assert_eq!(find_near(b"zzz@7,8;", &mut hint).map(|s| s.step), Some(7));
        assert_eq!(hint, 3);
        assert_eq!(find_near(b"none", &mut hint), None);
    }

    #[test]
    fn short_payloads_are_just_the_stamp() {
        assert_eq!(payload(1, 2, 0), "@1,2;");
    }

    #[test]
    fn false_starts_are_skipped() {
        // 0x40 is '@': a MessagePack str8 of length 64 starts with d9 40.
        let mut bytes = vec![0xd9, b'@', b'@', b'1', b'x'];
        bytes.extend_from_slice(b"@12,34;");
        assert_eq!(
            find(&bytes),
            Some(Stamp {
                step: 12,
                sent_micros: 34
            })
        );
        assert_eq!(find(b"@,1;"), None);
        assert_eq!(find(b"@1,;"), None);
        assert_eq!(find(b"no stamp"), None);
    }
}
