//! Writes the seed corpora in `fuzz/seeds/<target>/` from the golden vectors: the JSON and
//! MessagePack frames of every message type (the ones `signalr-protocol`'s golden tests use),
//! handshakes, negotiate bodies and query strings, and the Redis backplane test vectors TV1-TV7
//! of redis-backplane.md §1.5.
//!
//! Run from `fuzz/`: `cargo run --example write_seeds`. The output is committed; rerun this
//! when the golden vectors change.

use std::fs;
use std::path::{Path, PathBuf};

use signalr_protocol::{
    AvailableTransport, NegotiateError, NegotiateRedirect, NegotiateResponse, Protocol,
    TransportType,
};

#[path = "../../crates/signalr-protocol/tests/common/mod.rs"]
mod common;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let cases = common::all_cases();
    let framing = fresh(&root.join("framing"))?;

    for (target, protocol) in [
        ("json_messages", Protocol::Json),
        ("msgpack_messages", Protocol::MessagePack),
    ] {
        let dir = fresh(&root.join(target))?;
        let mut batch = Vec::new();
        for (i, case) in cases.iter().filter(|c| c.protocol == protocol).enumerate() {
            fs::write(dir.join(format!("{i:02}-{}", slug(case.name))), &case.bytes)?;
            batch.extend_from_slice(&case.bytes);
        }
        fs::write(dir.join("all-in-one-buffer"), &batch)?;
        // Values nested right up to the depth limit (128 levels for the whole message), and
        // one level past it, where the parsers and the transcoders must agree.
        for (name, levels) in [("deepest-item", 127), ("too-deep-item", 128)] {
            fs::write(dir.join(name), deep_value(protocol, false, levels))?;
        }
        for (name, levels) in [("deepest-argument", 126), ("too-deep-argument", 127)] {
            fs::write(dir.join(name), deep_value(protocol, true, levels))?;
        }

        // framing: [limit selector, 3 chunk lengths] + the batch; one run per protocol, fed
        // whole-ish, byte by byte, and in uneven pieces.
        for (name, control) in [
            ("large-chunks", [0u8, 200, 200, 200]),
            ("bytewise", [0, 0, 0, 0]),
            ("uneven-small-limit", [1, 3, 17, 5]),
            ("unlimited", [3, 2, 9, 64]),
        ] {
            let mut input = control.to_vec();
            input.extend_from_slice(&batch);
            fs::write(framing.join(format!("{target}-{name}")), input)?;
        }
    }

    let dir = fresh(&root.join("handshake"))?;
    for (name, text) in [
        (
            "request-json",
            &b"{\"protocol\":\"json\",\"version\":1}\x1e"[..],
        ),
        (
            "request-messagepack",
            b"{\"protocol\":\"messagepack\",\"version\":1}\x1e",
        ),
        (
            "request-v2-reordered-then-ping",
            b" {\"x\":[1,{}],\"version\":2,\"protocol\":\"json\"} \x1e{\"type\":6}\x1e",
        ),
        ("response-ok", b"{}\x1e"),
        (
            "response-error",
            b"{\"error\":\"The protocol 'x\\\"' is not supported.\"}\x1e",
        ),
        (
            "response-minor-version-then-ping",
            b"{\"minorVersion\":1}\x1e{\"type\":6}\x1e",
        ),
        ("response-with-type", b"{\"type\":6}\x1e"),
    ] {
        fs::write(dir.join(name), text)?;
    }

    let dir = fresh(&root.join("negotiate"))?;
    let v1 = NegotiateResponse {
        negotiate_version: 1,
        connection_id: "Xq3bd1yTtG2zqK0m9wF2aA".to_owned(),
        connection_token: Some("p0K5f1a8Hn7LQe3VxW2s9g".to_owned()),
        available_transports: TransportType::ALL
            .into_iter()
            .map(AvailableTransport::new)
            .collect(),
        use_stateful_reconnect: true,
    };
    let json = |value: &dyn erased::Json| value.to_json();
    fs::write(dir.join("response-v1"), json(&v1))?;
    fs::write(
        dir.join("response-v0"),
        r#"{"connectionId":"a","negotiateVersion":0,"availableTransports":[{"transport":"LongPolling","transferFormats":["Text","Binary"]}],"extra":1}"#,
    )?;
    fs::write(
        dir.join("redirect"),
        json(&NegotiateRedirect {
            url: "https://other/hub".to_owned(),
            access_token: Some("t".to_owned()),
        }),
    )?;
    fs::write(
        dir.join("error"),
        json(&NegotiateError {
            error: "nope".to_owned(),
        }),
    )?;
    fs::write(dir.join("transport"), "\"ServerSentEvents\"")?;
    fs::write(
        dir.join("query"),
        "negotiateVersion=1&id=p0K5f1a8Hn7LQe3VxW2s9g&access_token=eyJhbGciOi%2BJIUzI1NiJ9&_=1700000000000",
    )?;
    fs::write(
        dir.join("query-case"),
        "NEGOTIATEVERSION=-3&ID=a+b%20c#frag",
    )?;

    // redis-backplane.md §1.5.
    let dir = fresh(&root.join("redis_envelope"))?;
    let json_frame = b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"hello\"]}\x1e";
    let msgpack_frame = "11 96 01 80 c0 a4 53 65 6e 64 91 a5 68 65 6c 6c 6f 90";
    let tv6_frame = b"{\"type\":1,\"invocationId\":\"AAECAwQFBgcICQoLDA0ODw\",\"target\":\"GetMessage\",\"arguments\":[]}\x1e";
    let tv7_frame = b"{\"type\":3,\"invocationId\":\"AAECAwQFBgcICQoLDA0ODw\",\"result\":42}\x1e";
    let return_channel =
        b"MyApp.Hubs.ChatHub:internal:return:web1_02db60e5fab243b890a847fa5c4dcb29";
    let vectors: [(&str, Vec<u8>); 9] = [
        (
            "tv1-invocation-json",
            [&common::hex("92 90 81 a4 6a 73 6f 6e c4 31")[..], json_frame].concat(),
        ),
        (
            "tv2-invocation-both-protocols",
            [
                &common::hex("92 90 82 a4 6a 73 6f 6e c4 31")[..],
                json_frame,
                &common::hex("ab 6d 65 73 73 61 67 65 70 61 63 6b c4 12"),
                &common::hex(msgpack_frame),
            ]
            .concat(),
        ),
        (
            "tv3-invocation-excluding-a-connection",
            [
                &common::hex(
                    "92 91 b6 37 4d 35 4b 35 5a 67 4f 47 48 68 4a 65 4f 6d 56 30 54 6a 4c 6d 51",
                )[..],
                &common::hex("81 a4 6a 73 6f 6e c4 31"),
                json_frame,
            ]
            .concat(),
        ),
        (
            "tv4-group-add",
            common::hex(
                "95 01
                 d9 25 77 65 62 31 5f 30 32 64 62 36 30 65 35 66 61 62 32 34 33 62 38 39 30 61 38 34 37 66 61 35 63 34 64 63 62 32 39
                 01
                 a6 61 64 6d 69 6e 73
                 b6 37 4d 35 4b 35 5a 67 4f 47 48 68 4a 65 4f 6d 56 30 54 6a 4c 6d 51",
            ),
        ),
        ("tv5-ack", common::hex("91 01")),
        (
            "tv6-client-result-invocation",
            [
                &common::hex("94 90 81 a4 6a 73 6f 6e c4 58")[..],
                tv6_frame,
                &common::hex("b6"),
                b"AAECAwQFBgcICQoLDA0ODw",
                &common::hex("d9 48"),
                return_channel,
            ]
            .concat(),
        ),
        (
            "tv7-client-result-completion",
            [&common::hex("92 a4 6a 73 6f 6e c4 3f")[..], tv7_frame].concat(),
        ),
        (
            "channel-group",
            b"MyApp.Hubs.ChatHub:group:admins:eu".to_vec(),
        ),
        ("channel-prefixed-return", b"\x05app1:Chat:internal:return:web1_0".to_vec()),
    ];
    for (name, bytes) in vectors {
        fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// A StreamItem whose item, or an Invocation whose one argument, is `levels` arrays nested
/// in each other (the message is one more level, the argument array another).
fn deep_value(protocol: Protocol, argument: bool, levels: usize) -> Vec<u8> {
    match protocol {
        Protocol::Json => {
            let mut text = if argument {
                b"{\"type\":1,\"target\":\"T\",\"arguments\":[".to_vec()
            } else {
                b"{\"type\":2,\"invocationId\":\"1\",\"item\":".to_vec()
            };
            text.extend(std::iter::repeat_n(b'[', levels));
            text.extend(std::iter::repeat_n(b']', levels));
            if argument {
                text.push(b']');
            }
            text.extend_from_slice(b"}\x1e");
            text
        }
        Protocol::MessagePack => {
            let mut body = if argument {
                vec![0x96, 0x01, 0x80, 0xc0, 0xa1, b'T', 0x91]
            } else {
                vec![0x94, 0x02, 0x80, 0xa1, b'1']
            };
            body.extend(std::iter::repeat_n(0x91, levels - 1));
            body.push(0x90);
            if argument {
                body.push(0x90);
            }
            let mut frame = Vec::new();
            let mut len = body.len();
            while len >= 0x80 {
                frame.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            frame.push(len as u8);
            frame.extend_from_slice(&body);
            frame
        }
    }
}

/// Creates `dir` anew, empty.
fn fresh(dir: &Path) -> std::io::Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

mod erased {
    /// Serializes any of the negotiate types without naming each.
    pub(crate) trait Json {
        fn to_json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).expect("negotiate types serialize")
        }
    }
}
