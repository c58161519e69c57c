//! The properties the `redis_envelope` fuzz target checks, on what another node (or anyone
//! who can publish on the Redis server) sends. Shared by the libFuzzer target in `fuzz/`,
//! which includes this file by path, and by `tests/fuzz_regressions.rs`, which replays the
//! committed seeds and regression inputs through it under a plain `cargo test`.

#![allow(dead_code)]

use std::ops::Range;

use bytes::Bytes;
use signalr_redis::channels::{ChannelKind, Channels};
use signalr_redis::envelope::{Ack, ClientResultCompletion, GroupCommand, Invocation};

/// Target `redis_envelope`: every decoder on the same payload, re-encoding what decodes;
/// then the payload as a channel name.
pub(crate) fn redis_envelope(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    let whole = address_range(&payload);

    if let Ok(invocation) = Invocation::decode(&payload) {
        for (_, frame) in &invocation.messages {
            assert!(is_within(frame, &whole), "frames are slices of the payload");
        }
        let encoded = invocation.encode();
        assert_eq!(Invocation::decode(&encoded).as_ref(), Ok(&invocation));
        assert_eq!(
            Invocation::decode(&encoded).map(|i| i.encode()).as_ref(),
            Ok(&encoded),
            "encoding is canonical"
        );
    }
    if let Ok(command) = GroupCommand::decode(&payload) {
        let encoded = command.encode();
        assert_eq!(GroupCommand::decode(&encoded).as_ref(), Ok(&command));
    }
    if let Ok(ack) = Ack::decode(&payload) {
        assert_eq!(Ack::decode(&ack.encode()), Ok(ack));
    }
    if let Ok(completion) = ClientResultCompletion::decode(&payload) {
        assert!(is_within(&completion.completion, &whole));
        let encoded = completion.encode();
        assert_eq!(
            ClientResultCompletion::decode(&encoded).as_ref(),
            Ok(&completion)
        );
    }

    channels(data);
}

fn address_range(bytes: &Bytes) -> Range<usize> {
    let start = bytes.as_ptr() as usize;
    start..start + bytes.len()
}

fn is_within(slice: &Bytes, whole: &Range<usize>) -> bool {
    slice.is_empty() || {
        let inner = address_range(slice);
        inner.start >= whole.start && inner.end <= whole.end
    }
}

/// Classifies `data` as a channel name for a few hubs, and checks that every name
/// [`Channels`] builds classifies as what it was built for.
fn channels(data: &[u8]) {
    // Byte 0 picks how much of the input makes the prefix, the next bytes up to a NUL the
    // hub name; that lets the fuzzer also play with hubs whose names contain `:`.
    let (prefix, hub) = match data.split_first() {
        Some((&n, rest)) => {
            let (prefix, rest) = rest.split_at(rest.len().min(usize::from(n % 8)));
            let hub_end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            (
                prefix,
                String::from_utf8_lossy(&rest[..hub_end]).into_owned(),
            )
        }
        None => (&b""[..], String::new()),
    };
    let hubs = [
        Channels::new("", "MyApp.Hubs.ChatHub"),
        Channels::new("app1:", "Chat"),
        Channels::new(prefix, &hub),
    ];
    let name = String::from_utf8_lossy(data);
    for channels in &hubs {
        let kind = channels.classify(data);
        if let Some(rebuilt) = build(channels, kind) {
            assert_eq!(
                &rebuilt[..],
                data,
                "{kind:?} rebuilds the name it came from"
            );
        }
        for (kind, built) in [
            (ChannelKind::All, channels.all()),
            (ChannelKind::InternalGroups, channels.internal_groups()),
            (ChannelKind::Group(&name), channels.group(&name)),
            (ChannelKind::User(&name), channels.user(&name)),
            (ChannelKind::Connection(&name), channels.connection(&name)),
            (ChannelKind::Ack(&name), channels.ack(&name)),
            (ChannelKind::Return(&name), channels.return_channel(&name)),
        ] {
            assert_eq!(channels.classify(&built), kind, "{built:?}");
        }
        assert_eq!(
            channels.prefixed(&channels.envelope_return_channel(&name)),
            channels.return_channel(&name)
        );
    }
}

fn build(channels: &Channels, kind: ChannelKind<'_>) -> Option<Bytes> {
    Some(match kind {
        ChannelKind::All => channels.all(),
        ChannelKind::Group(name) => channels.group(name),
        ChannelKind::User(name) => channels.user(name),
        ChannelKind::Connection(name) => channels.connection(name),
        ChannelKind::InternalGroups => channels.internal_groups(),
        ChannelKind::Ack(name) => channels.ack(name),
        ChannelKind::Return(name) => channels.return_channel(name),
        ChannelKind::Unknown => return None,
    })
}
