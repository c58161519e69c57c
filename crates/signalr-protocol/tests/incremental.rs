//! Input arrives in arbitrary pieces: every golden frame, and batches of them, split at every
//! byte offset must parse to the same messages, with nothing consumed until a message is
//! complete and nothing left over at the end.

mod common;

use bytes::BytesMut;
use common::*;
use signalr_protocol::{HubMessage, Protocol};

const MAX: usize = 1 << 20;

#[test]
fn every_golden_frame_split_at_every_offset() {
    for case in all_cases() {
        let bytes = &case.bytes;
        for split in 0..=bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            let first = case.protocol.parse_message(&mut buf, MAX);
            if split < bytes.len() {
                assert_eq!(first, Ok(None), "{} split at {split}", case.name);
                assert_eq!(buf.len(), split, "{}: nothing may be consumed", case.name);
                buf.extend_from_slice(&bytes[split..]);
                let second = case.protocol.parse_message(&mut buf, MAX);
                assert_eq!(
                    second,
                    Ok(Some(case.message.clone())),
                    "{} split at {split}",
                    case.name
                );
            } else {
                assert_eq!(first, Ok(Some(case.message.clone())), "{}", case.name);
            }
            assert!(buf.is_empty(), "{} split at {split}: {buf:?}", case.name);
            assert_eq!(case.protocol.parse_message(&mut buf, MAX), Ok(None));
        }
    }
}

fn batch(protocol: Protocol) -> (Vec<u8>, Vec<HubMessage>) {
    let mut bytes = Vec::new();
    let mut messages = Vec::new();
    for case in all_cases().into_iter().filter(|c| c.protocol == protocol) {
        bytes.extend_from_slice(&case.bytes);
        messages.push(case.message);
    }
    (bytes, messages)
}

#[test]
fn a_batch_split_at_every_offset() {
    for protocol in Protocol::ALL {
        let (bytes, expected) = batch(protocol);
        for split in 0..=bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut got = drain(protocol, &mut buf, MAX).expect("first part");
            buf.extend_from_slice(&bytes[split..]);
            got.extend(drain(protocol, &mut buf, MAX).expect("second part"));
            assert_eq!(got, expected, "{protocol} split at {split}");
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn a_batch_fed_one_byte_at_a_time() {
    for protocol in Protocol::ALL {
        let (bytes, expected) = batch(protocol);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &bytes {
            buf.extend_from_slice(&[b]);
            got.extend(drain(protocol, &mut buf, MAX).expect("parse"));
        }
        assert_eq!(got, expected, "{protocol}");
        assert!(buf.is_empty());
    }
}

#[test]
fn many_messages_in_one_buffer() {
    for protocol in Protocol::ALL {
        let mut buf = BytesMut::new();
        let mut expected = Vec::new();
        for i in 0..1000u64 {
            let message = match i % 3 {
                0 => HubMessage::Invocation(invocation(
                    None,
                    "broadcastMessage",
                    vec![
                        protocol.encode_value("alice").expect("encode"),
                        protocol
                            .encode_value(&format!("message {i}"))
                            .expect("encode"),
                    ],
                )),
                1 => HubMessage::Ping,
                _ => HubMessage::Ack(signalr_protocol::Ack { sequence_id: i }),
            };
            protocol.write_message(&message, &mut buf).expect("write");
            expected.push(message);
        }
        let got = drain(protocol, &mut buf, MAX).expect("parse");
        assert_eq!(got, expected);
        assert!(buf.is_empty());
    }
}

#[test]
fn values_are_slices_of_the_received_frame() {
    let mut buf =
        BytesMut::from(&b"{\"type\":1,\"target\":\"t\",\"arguments\":[\"abc\",{\"x\":1}]}\x1e"[..]);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Ok(Some(HubMessage::Invocation(inv))) = Protocol::Json.parse_message(&mut buf, MAX) else {
        panic!("expected an invocation")
    };
    let values = inv.arguments.into_values().expect("values");
    for value in values {
        let ptr = value.as_bytes().as_ptr() as usize;
        assert!(ptr >= start && ptr < end, "value was copied");
    }
}
