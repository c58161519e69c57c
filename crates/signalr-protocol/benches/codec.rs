//! Parse and write costs of typical hub messages, JSON against MessagePack: a chat broadcast
//! invocation and a completion with a small result.

// criterion_group! expands to an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signalr_protocol::{Arguments, Completion, CompletionResult, HubMessage, Invocation, Protocol};

fn chat_invocation(protocol: Protocol) -> HubMessage {
    HubMessage::Invocation(Invocation {
        headers: Vec::new(),
        invocation_id: None,
        target: "broadcastMessage".to_owned(),
        arguments: Arguments::Values(vec![
            protocol.encode_value("alice").expect("encode"),
            protocol.encode_value("hello world").expect("encode"),
        ]),
        stream_ids: Vec::new(),
    })
}

fn completion(protocol: Protocol) -> HubMessage {
    HubMessage::Completion(Completion {
        headers: Vec::new(),
        invocation_id: "42".to_owned(),
        result: CompletionResult::Value(protocol.encode_value(&12345u32).expect("encode")),
    })
}

fn bench_codec(c: &mut Criterion) {
    for (name, build) in [
        ("invocation", chat_invocation as fn(Protocol) -> HubMessage),
        ("completion", completion),
    ] {
        let mut group = c.benchmark_group(name);
        for protocol in Protocol::ALL {
            let message = build(protocol);
            let frame = protocol.encode_message(&message).expect("encode");
            group.throughput(Throughput::Bytes(frame.len() as u64));

            group.bench_function(format!("write/{protocol}"), |b| {
                let mut out = BytesMut::with_capacity(256);
                b.iter(|| {
                    out.clear();
                    protocol
                        .write_message(black_box(&message), &mut out)
                        .expect("write");
                    black_box(&out);
                });
            });

            group.bench_function(format!("parse/{protocol}"), |b| {
                b.iter(|| {
                    let mut buf = BytesMut::from(&frame[..]);
                    let parsed = protocol
                        .parse_message(black_box(&mut buf), 32 * 1024)
                        .expect("parse");
                    black_box(parsed)
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
