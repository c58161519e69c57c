//! The envelopes against the byte-exact test vectors of redis-backplane.md §1.5 (what
//! ASP.NET Core's `RedisProtocol` publishes), in both directions, plus the decoder's
//! tolerance of every encoding a .NET peer may use and its refusal of malformed input.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use signalr_redis::envelope::{
    Ack, ClientResultCompletion, ClientResultRoute, DecodeError, GroupAction, GroupCommand,
    Invocation,
};

/// Parses whitespace-separated hex bytes.
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect()
}

fn cat(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

const JSON_FRAME: &[u8] = b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"hello\"]}\x1e";
const MSGPACK_FRAME: &str = "11 96 01 80 c0 a4 53 65 6e 64 91 a5 68 65 6c 6c 6f 90";
const CONNECTION_ID: &str = "7M5K5ZgOGHhJeOmV0TjLmQ";
const SERVER: &str = "web1_02db60e5fab243b890a847fa5c4dcb29";
const INVOCATION_ID: &str = "AAECAwQFBgcICQoLDA0ODw";
const RETURN_CHANNEL: &str =
    "MyApp.Hubs.ChatHub:internal:return:web1_02db60e5fab243b890a847fa5c4dcb29";
const TV6_FRAME: &[u8] =
    b"{\"type\":1,\"invocationId\":\"AAECAwQFBgcICQoLDA0ODw\",\"target\":\"GetMessage\",\"arguments\":[]}\x1e";
const TV7_FRAME: &[u8] =
    b"{\"type\":3,\"invocationId\":\"AAECAwQFBgcICQoLDA0ODw\",\"result\":42}\x1e";

fn tv1() -> Bytes {
    Bytes::from(hex(
        "92 90 81 a4 6a 73 6f 6e c4 31
         7b 22 74 79 70 65 22 3a 31 2c 22 74 61 72 67 65 74 22 3a 22 53 65 6e 64 22 2c
         22 61 72 67 75 6d 65 6e 74 73 22 3a 5b 22 68 65 6c 6c 6f 22 5d 7d 1e",
    ))
}

fn tv2() -> Bytes {
    cat(&[
        &hex("92 90 82 a4 6a 73 6f 6e c4 31"),
        JSON_FRAME,
        &hex("ab 6d 65 73 73 61 67 65 70 61 63 6b c4 12"),
        &hex(MSGPACK_FRAME),
    ])
}

fn tv3() -> Bytes {
    cat(&[
        &hex("92 91 b6 37 4d 35 4b 35 5a 67 4f 47 48 68 4a 65 4f 6d 56 30 54 6a 4c 6d 51"),
        &hex("81 a4 6a 73 6f 6e c4 31"),
        JSON_FRAME,
    ])
}

fn tv4() -> Bytes {
    Bytes::from(hex(
        "95 01
         d9 25 77 65 62 31 5f 30 32 64 62 36 30 65 35 66 61 62 32 34 33 62 38 39 30 61 38 34 37 66 61 35 63 34 64 63 62 32 39
         01
         a6 61 64 6d 69 6e 73
         b6 37 4d 35 4b 35 5a 67 4f 47 48 68 4a 65 4f 6d 56 30 54 6a 4c 6d 51",
    ))
}

/// TV4's variant: Remove, id 300.
fn tv4_remove_300() -> Bytes {
    let tv4 = tv4();
    cat(&[&hex("95 cd 01 2c"), &tv4[2..41], &hex("02"), &tv4[42..]])
}

fn tv5() -> Bytes {
    Bytes::from(hex("91 01"))
}

fn tv6() -> Bytes {
    cat(&[
        &hex("94 90 81 a4 6a 73 6f 6e c4 58"),
        TV6_FRAME,
        &hex("b6"),
        INVOCATION_ID.as_bytes(),
        &hex("d9 48"),
        RETURN_CHANNEL.as_bytes(),
    ])
}

fn tv7() -> Bytes {
    cat(&[&hex("92 a4 6a 73 6f 6e c4 3f"), TV7_FRAME])
}

fn json_only(frame: &'static [u8]) -> Vec<(String, Bytes)> {
    vec![("json".to_owned(), Bytes::from_static(frame))]
}

fn tv1_value() -> Invocation {
    Invocation {
        excluded_connection_ids: vec![],
        messages: json_only(JSON_FRAME),
        client_result: None,
    }
}

fn tv4_value() -> GroupCommand {
    GroupCommand {
        id: 1,
        server_name: SERVER.to_owned(),
        action: GroupAction::Add,
        group: "admins".to_owned(),
        connection_id: CONNECTION_ID.to_owned(),
    }
}

fn tv6_value() -> Invocation {
    Invocation {
        excluded_connection_ids: vec![],
        messages: json_only(TV6_FRAME),
        client_result: Some(ClientResultRoute {
            invocation_id: INVOCATION_ID.to_owned(),
            return_channel: RETURN_CHANNEL.to_owned(),
        }),
    }
}

/// The inner frames are the sizes the document states (49 and 18 bytes, 88 and 63 bytes).
#[test]
fn inner_frames_have_the_documented_sizes() {
    assert_eq!(JSON_FRAME.len(), 49);
    assert_eq!(hex(MSGPACK_FRAME).len(), 18);
    assert_eq!(TV6_FRAME.len(), 88);
    assert_eq!(TV7_FRAME.len(), 63);
    assert_eq!(RETURN_CHANNEL.len(), 72);
    assert_eq!(SERVER.len(), 37);
}

/// TV1: `Clients.All.SendAsync("Send", "hello")` from a JSON-only server.
#[test]
fn tv1_broadcast_json_only() {
    let bytes = tv1();
    assert_eq!(bytes.len(), 59);
    assert_eq!(tv1_value().encode(), bytes);
    assert_eq!(Invocation::decode(&bytes).unwrap(), tv1_value());
}

/// TV2: the same from a server with json + messagepack, in that order.
#[test]
fn tv2_broadcast_json_and_messagepack() {
    let value = Invocation {
        excluded_connection_ids: vec![],
        messages: vec![
            ("json".to_owned(), Bytes::from_static(JSON_FRAME)),
            ("messagepack".to_owned(), Bytes::from(hex(MSGPACK_FRAME))),
        ],
        client_result: None,
    };
    let bytes = tv2();
    assert_eq!(bytes.len(), 91);
    assert_eq!(value.encode(), bytes);
    let decoded = Invocation::decode(&bytes).unwrap();
    assert_eq!(decoded, value);
    assert_eq!(
        decoded.frame("messagepack").unwrap(),
        &hex(MSGPACK_FRAME)[..]
    );
    assert_eq!(decoded.frame("json").unwrap(), JSON_FRAME);
    assert!(decoded.frame("blazorpack").is_none());
}

/// TV3: `Clients.AllExcept(id)`.
#[test]
fn tv3_all_except_one_connection() {
    let value = Invocation {
        excluded_connection_ids: vec![CONNECTION_ID.to_owned()],
        messages: json_only(JSON_FRAME),
        client_result: None,
    };
    let bytes = tv3();
    assert_eq!(bytes.len(), 82);
    assert_eq!(value.encode(), bytes);
    assert_eq!(Invocation::decode(&bytes).unwrap(), value);
}

/// TV4: remote `AddToGroupAsync`, first command of its server.
#[test]
fn tv4_group_add() {
    let bytes = tv4();
    assert_eq!(bytes.len(), 72);
    assert_eq!(tv4_value().encode(), bytes);
    assert_eq!(GroupCommand::decode(&bytes).unwrap(), tv4_value());
}

/// TV4 variant: Remove with id 300 (`cd 01 2c`, action `02`).
#[test]
fn tv4_variant_group_remove_with_id_300() {
    let value = GroupCommand {
        id: 300,
        action: GroupAction::Remove,
        ..tv4_value()
    };
    let bytes = tv4_remove_300();
    assert_eq!(&bytes[..4], &hex("95 cd 01 2c")[..]);
    assert_eq!(bytes.len(), 74);
    assert_eq!(value.encode(), bytes);
    assert_eq!(GroupCommand::decode(&bytes).unwrap(), value);
}

/// TV5: the ack for TV4.
#[test]
fn tv5_ack() {
    assert_eq!(Ack { id: 1 }.encode(), tv5());
    assert_eq!(Ack::decode(&tv5()).unwrap(), Ack { id: 1 });
}

/// TV6: a client-result invocation to a remote connection.
#[test]
fn tv6_client_result_invocation() {
    let bytes = tv6();
    assert_eq!(bytes.len(), 195);
    assert_eq!(tv6_value().encode(), bytes);
    assert_eq!(Invocation::decode(&bytes).unwrap(), tv6_value());
}

/// TV7: the completion returned for TV6.
#[test]
fn tv7_client_result_completion() {
    let value = ClientResultCompletion {
        protocol: "json".to_owned(),
        completion: Bytes::from_static(TV7_FRAME),
    };
    let bytes = tv7();
    assert_eq!(bytes.len(), 71);
    assert_eq!(value.encode(), bytes);
    assert_eq!(ClientResultCompletion::decode(&bytes).unwrap(), value);
}

/// Decoded frames point into the payload: nothing is copied on the receive path.
#[test]
fn decoded_frames_are_slices_of_the_payload() {
    let within = |payload: &Bytes, frame: &Bytes| {
        let start = payload.as_ptr() as usize;
        let at = frame.as_ptr() as usize;
        at >= start && at + frame.len() <= start + payload.len()
    };
    let payload = tv2();
    let decoded = Invocation::decode(&payload).unwrap();
    for (_, frame) in &decoded.messages {
        assert!(within(&payload, frame));
    }
    let payload = tv7();
    let decoded = ClientResultCompletion::decode(&payload).unwrap();
    assert!(within(&payload, &decoded.completion));
}

// ---------------------------------------------------------------------------------------
// Tolerance: what .NET peers (or other MessagePack writers) may legitimately send.
// ---------------------------------------------------------------------------------------

/// Every integer encoding of `value` that MessagePack allows.
fn int_encodings(value: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if value <= 0x7f {
        out.push(vec![value as u8]);
    }
    if let Ok(v) = u8::try_from(value) {
        out.push(vec![0xcc, v]);
    }
    if let Ok(v) = u16::try_from(value) {
        out.push([&[0xcd][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = u32::try_from(value) {
        out.push([&[0xce][..], &v.to_be_bytes()].concat());
    }
    out.push([&[0xcf][..], &value.to_be_bytes()].concat());
    if let Ok(v) = i8::try_from(value) {
        out.push(vec![0xd0, v as u8]);
    }
    if let Ok(v) = i16::try_from(value) {
        out.push([&[0xd1][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = i32::try_from(value) {
        out.push([&[0xd2][..], &v.to_be_bytes()].concat());
    }
    if let Ok(v) = i64::try_from(value) {
        out.push([&[0xd3][..], &v.to_be_bytes()].concat());
    }
    out
}

fn group_command_bytes(id: &[u8], action: &[u8]) -> Bytes {
    let tv4 = tv4();
    cat(&[&hex("95"), id, &tv4[2..41], action, &tv4[42..]])
}

/// Ids in any integer width and signedness, including u64 and signed forms of small values.
#[test]
fn ids_decode_from_every_integer_width() {
    for value in [
        0u64,
        1,
        127,
        128,
        255,
        256,
        300,
        65_535,
        65_536,
        i32::MAX as u64,
        u32::MAX as u64,
    ] {
        for encoding in int_encodings(value) {
            let ack = [&[0x91][..], &encoding].concat();
            assert_eq!(
                Ack::decode(&ack).unwrap().id as u64,
                value,
                "ack {encoding:02x?}"
            );
            let command = GroupCommand::decode(&group_command_bytes(&encoding, &[1])).unwrap();
            assert_eq!(command.id as u64, value, "group command {encoding:02x?}");
        }
    }
}

/// The action in any integer width.
#[test]
fn group_action_decodes_from_every_integer_width() {
    for (value, action) in [(1, GroupAction::Add), (2, GroupAction::Remove)] {
        let encodings = int_encodings(value);
        assert_eq!(encodings.len(), 9);
        for encoding in encodings {
            let command = GroupCommand::decode(&group_command_bytes(&[0x01], &encoding)).unwrap();
            assert_eq!(command.action, action, "{encoding:02x?}");
        }
    }
}

/// Every way to write a byte blob: bin8/16/32, fixstr/str8/16/32 (old-spec writers), and
/// nil (read as empty, as on .NET).
fn blob_encodings(blob: &[u8]) -> Vec<Vec<u8>> {
    let len = blob.len();
    let mut out = vec![
        [&[0xc4, len as u8][..], blob].concat(),
        [&[0xc5][..], &(len as u16).to_be_bytes(), blob].concat(),
        [&[0xc6][..], &(len as u32).to_be_bytes(), blob].concat(),
        [&[0xd9, len as u8][..], blob].concat(),
        [&[0xda][..], &(len as u16).to_be_bytes(), blob].concat(),
        [&[0xdb][..], &(len as u32).to_be_bytes(), blob].concat(),
    ];
    if len <= 31 {
        out.push([&[0xa0 | len as u8][..], blob].concat());
    }
    out
}

#[test]
fn frames_decode_from_bin_and_str_of_every_width() {
    for frame in [JSON_FRAME, b"{}\x1e".as_slice()] {
        for encoding in blob_encodings(frame) {
            let invocation = cat(&[&hex("92 90 81 a4 6a 73 6f 6e"), &encoding]);
            let decoded = Invocation::decode(&invocation).unwrap();
            assert_eq!(
                decoded.frame("json").unwrap(),
                frame,
                "{:02x?}",
                &encoding[..3]
            );

            let completion = cat(&[&hex("92 a4 6a 73 6f 6e"), &encoding]);
            let decoded = ClientResultCompletion::decode(&completion).unwrap();
            assert_eq!(decoded.completion, frame);
        }
    }
}

/// A nil frame or completion reads as empty (.NET: `ReadBytes() ?? Array.Empty<byte>()`).
#[test]
fn nil_frames_read_as_empty() {
    let decoded = Invocation::decode(&Bytes::from(hex("92 90 81 a4 6a 73 6f 6e c0"))).unwrap();
    assert_eq!(decoded.frame("json").unwrap(), &b""[..]);
    let decoded =
        ClientResultCompletion::decode(&Bytes::from(hex("92 a4 6a 73 6f 6e c0"))).unwrap();
    assert!(decoded.completion.is_empty());
}

/// Elements after the last one a payload kind defines are ignored, whatever they hold
/// (§6.3: this is where extensions go).
#[test]
fn extra_trailing_elements_are_ignored() {
    let extras = [
        hex("c0"),
        hex("81 a1 6f a3 72 75 73"),       // {o: "rus"}
        hex("dd ff ff ff ff"),             // even a header declaring 4 G elements, never read
        hex("c1"),                         // even a reserved marker
        [&[0x91; 100][..], &[1]].concat(), // deep nesting
    ];
    for extra in &extras {
        // Invocation of 3 elements: element [2] is not read by .NET either.
        let mut bytes = tv1().to_vec();
        bytes[0] = 0x93;
        bytes.extend_from_slice(extra);
        assert_eq!(
            Invocation::decode(&Bytes::from(bytes)).unwrap(),
            tv1_value()
        );

        // Client-result invocation of 5 elements.
        let mut bytes = tv6().to_vec();
        bytes[0] = 0x95;
        bytes.extend_from_slice(extra);
        assert_eq!(
            Invocation::decode(&Bytes::from(bytes)).unwrap(),
            tv6_value()
        );

        let mut bytes = tv4().to_vec();
        bytes[0] = 0x96;
        bytes.extend_from_slice(extra);
        assert_eq!(GroupCommand::decode(&bytes).unwrap(), tv4_value());

        let bytes = [&[0x92, 0x01][..], extra].concat();
        assert_eq!(Ack::decode(&bytes).unwrap(), Ack { id: 1 });

        let mut bytes = tv7().to_vec();
        bytes[0] = 0x93;
        bytes.extend_from_slice(extra);
        assert_eq!(
            ClientResultCompletion::decode(&Bytes::from(bytes))
                .unwrap()
                .protocol,
            "json"
        );
    }
}

/// Arrays of 2, 3 and 4 elements: elements 2 and 3 are read only when there are more than 3.
#[test]
fn invocation_arrays_of_length_two_three_and_four() {
    assert_eq!(Invocation::decode(&tv1()).unwrap(), tv1_value());

    let three = cat(&[&hex("93"), &tv1()[1..], &hex("a3 61 62 63")]);
    assert_eq!(Invocation::decode(&three).unwrap(), tv1_value());

    let four = cat(&[&hex("94"), &tv1()[1..], &hex("a2 69 64 a2 72 63")]);
    let decoded = Invocation::decode(&four).unwrap();
    assert_eq!(
        decoded.client_result,
        Some(ClientResultRoute {
            invocation_id: "id".to_owned(),
            return_channel: "rc".to_owned(),
        })
    );
    assert_eq!(decoded.messages, tv1_value().messages);
}

/// .NET treats a 4-element invocation with a nil or empty id as a plain one; so do we, and
/// likewise without a return channel to answer on.
#[test]
fn client_result_needs_an_id_and_a_return_channel() {
    for tail in [
        "c0 a2 72 63",
        "a0 a2 72 63",
        "a2 69 64 c0",
        "a2 69 64 a0",
        "c0 c0",
    ] {
        let bytes = cat(&[&hex("94"), &tv1()[1..], &hex(tail)]);
        assert_eq!(Invocation::decode(&bytes).unwrap(), tv1_value(), "{tail}");
    }
}

/// Nil entries among the excluded ids are skipped (.NET keeps a null that matches nothing).
#[test]
fn nil_excluded_ids_are_skipped() {
    let bytes = cat(&[&hex("92 93 c0 a1 61 c0 81 a4 6a 73 6f 6e c4 00")]);
    let decoded = Invocation::decode(&bytes).unwrap();
    assert_eq!(decoded.excluded_connection_ids, vec!["a".to_owned()]);
}

/// Non-compact headers and strings (array16/32, map16/32, str8 for short strings) are accepted.
#[test]
fn non_compact_headers_and_strings_are_accepted() {
    let bytes = cat(&[
        &hex("dc 00 02"),       // array16 of 2
        &hex("dd 00 00 00 01"), // array32 of 1
        &hex("d9 01 61"),       // str8 "a"
        &hex("de 00 01"),       // map16 of 1
        &hex("da 00 04 6a 73 6f 6e"),
        &hex("c4 01 1e"),
    ]);
    let decoded = Invocation::decode(&bytes).unwrap();
    assert_eq!(decoded.excluded_connection_ids, vec!["a".to_owned()]);
    assert_eq!(decoded.frame("json").unwrap(), &b"\x1e"[..]);

    let ack = hex("df 00 00 00 00");
    assert!(matches!(
        Ack::decode(&ack),
        Err(DecodeError::WrongType { .. })
    ));
    let ack = hex("dd 00 00 00 01 cc 07");
    assert_eq!(Ack::decode(&ack).unwrap(), Ack { id: 7 });
}

// ---------------------------------------------------------------------------------------
// Encoding picks the compact form at every size boundary, as MessagePack-CSharp does.
// ---------------------------------------------------------------------------------------

#[test]
fn ids_encode_in_the_most_compact_width() {
    for (id, header) in [
        (0, "00"),
        (127, "7f"),
        (128, "cc 80"),
        (255, "cc ff"),
        (256, "cd 01 00"),
        (65_535, "cd ff ff"),
        (65_536, "ce 00 01 00 00"),
        (u32::MAX, "ce ff ff ff ff"),
    ] {
        let encoded = Ack { id }.encode();
        assert_eq!(&encoded[1..], &hex(header)[..], "{id}");
        assert_eq!(Ack::decode(&encoded).unwrap().id, id);
    }
}

#[test]
fn strings_and_frames_encode_in_the_most_compact_width() {
    for (len, str_header, bin_header) in [
        (0, "a0", "c4 00"),
        (31, "bf", "c4 1f"),
        (32, "d9 20", "c4 20"),
        (255, "d9 ff", "c4 ff"),
        (256, "da 01 00", "c5 01 00"),
        (65_535, "da ff ff", "c5 ff ff"),
        (65_536, "db 00 01 00 00", "c6 00 01 00 00"),
    ] {
        let value = ClientResultCompletion {
            protocol: "p".repeat(len),
            completion: Bytes::from(vec![7; len]),
        };
        let encoded = value.encode();
        let str_header = hex(str_header);
        let bin_header = hex(bin_header);
        assert_eq!(
            &encoded[1..1 + str_header.len()],
            &str_header[..],
            "str {len}"
        );
        let bin_at = 1 + str_header.len() + len;
        assert_eq!(
            &encoded[bin_at..bin_at + bin_header.len()],
            &bin_header[..],
            "bin {len}"
        );
        assert_eq!(encoded.len(), bin_at + bin_header.len() + len);
        assert_eq!(ClientResultCompletion::decode(&encoded).unwrap(), value);
    }
}

#[test]
fn arrays_and_maps_encode_in_the_most_compact_width() {
    for (count, array_header, map_header) in [
        (15, "9f", "8f"),
        (16, "dc 00 10", "de 00 10"),
        (65_535, "dc ff ff", "de ff ff"),
        (65_536, "dd 00 01 00 00", "df 00 01 00 00"),
    ] {
        let value = Invocation {
            excluded_connection_ids: vec![String::new(); count],
            messages: vec![(String::new(), Bytes::new()); count],
            client_result: None,
        };
        let encoded = value.encode();
        let array_header = hex(array_header);
        assert_eq!(
            &encoded[1..1 + array_header.len()],
            &array_header[..],
            "array {count}"
        );
        let map_at = 1 + array_header.len() + count;
        let map_header = hex(map_header);
        assert_eq!(
            &encoded[map_at..map_at + map_header.len()],
            &map_header[..],
            "map {count}"
        );
        assert_eq!(Invocation::decode(&encoded).unwrap(), value);
    }
}

#[test]
fn group_command_and_client_result_round_trip_with_long_names() {
    let command = GroupCommand {
        id: 70_000,
        server_name: "s".repeat(300),
        action: GroupAction::Remove,
        group: "group:with:colons".to_owned(),
        connection_id: "c".repeat(40),
    };
    assert_eq!(GroupCommand::decode(&command.encode()).unwrap(), command);

    let invocation = Invocation {
        excluded_connection_ids: vec!["a".to_owned(), "b".to_owned()],
        messages: vec![("json".to_owned(), Bytes::from(vec![b'x'; 70_000]))],
        client_result: Some(ClientResultRoute {
            invocation_id: "i".repeat(22),
            return_channel: "r".repeat(300),
        }),
    };
    assert_eq!(
        Invocation::decode(&invocation.encode()).unwrap(),
        invocation
    );
}

// ---------------------------------------------------------------------------------------
// Rejection: malformed payloads are typed errors, never panics or huge allocations.
// ---------------------------------------------------------------------------------------

fn is_truncation(err: &DecodeError) -> bool {
    matches!(
        err,
        DecodeError::Truncated { .. }
            | DecodeError::MissingElements { .. }
            | DecodeError::CountExceedsInput { .. }
    )
}

/// Cutting any vector short at any byte offset gives a truncation error.
#[test]
fn every_truncation_of_every_vector_is_an_error() {
    type Decoder = fn(&Bytes) -> Result<(), DecodeError>;
    let cases: [(&str, Bytes, Decoder); 9] = [
        ("tv1", tv1(), |b| Invocation::decode(b).map(drop)),
        ("tv2", tv2(), |b| Invocation::decode(b).map(drop)),
        ("tv3", tv3(), |b| Invocation::decode(b).map(drop)),
        ("tv4", tv4(), |b| GroupCommand::decode(b).map(drop)),
        ("tv4 remove 300", tv4_remove_300(), |b| {
            GroupCommand::decode(b).map(drop)
        }),
        ("tv5", tv5(), |b| Ack::decode(b).map(drop)),
        ("tv6", tv6(), |b| Invocation::decode(b).map(drop)),
        ("tv7", tv7(), |b| {
            ClientResultCompletion::decode(b).map(drop)
        }),
        ("empty map", Bytes::from(hex("92 90 80")), |b| {
            Invocation::decode(b).map(drop)
        }),
    ];
    for (name, bytes, decode) in cases {
        assert!(decode(&bytes).is_ok(), "{name} whole");
        for cut in 0..bytes.len() {
            let err = decode(&bytes.slice(..cut)).expect_err(name);
            assert!(is_truncation(&err), "{name} cut at {cut}: {err}");
        }
    }
}

/// The errors read well.
#[test]
fn error_messages_name_the_problem() {
    let err =
        Invocation::decode(&Bytes::from(hex("94 90 81 a4 6a 73 6f 6e c4 00 a1 61"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated envelope: invocation array of 4 declared, 3 present"
    );
    let err = Invocation::decode(&Bytes::from(hex("92 90 81 a4 6a 73 6f 6e c6 ff ff ff ff")))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated envelope: hub message frame needs 4294967295 more bytes, 0 present"
    );
    let err = Ack::decode(&hex("dd ff ff ff ff")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated envelope: ack declares 4294967295 elements, only 0 bytes follow"
    );
    let err = GroupCommand::decode(&hex("81 01 02")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "group command: expected an array, found fixmap"
    );
    let err = GroupCommand::decode(&group_command_bytes(&[0x01], &[0x03])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown group action 3 (expected 1 = add or 2 = remove)"
    );
    let err = Ack::decode(&hex("91 ff")).unwrap_err();
    assert_eq!(err.to_string(), "ack id is negative (-1)");
    let err = Invocation::decode(&Bytes::from(hex("91 90"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invocation array has 1 elements, at least 2 required"
    );
}

/// Lengths far beyond the input fail before anything is allocated or sliced.
#[test]
fn huge_declared_lengths_are_rejected() {
    let invocations = [
        "dd ff ff ff ff",                         // root array32
        "dc ff ff",                               // root array16
        "92 dd ff ff ff ff",                      // excluded ids array32
        "92 90 df ff ff ff ff",                   // protocol map32
        "92 90 de ff ff",                         // protocol map16
        "92 90 81 db ff ff ff ff",                // protocol name str32
        "92 90 81 a4 6a 73 6f 6e c6 ff ff ff ff", // frame bin32
        "92 90 81 a4 6a 73 6f 6e c5 ff ff",       // frame bin16
        "92 90 81 a4 6a 73 6f 6e db ff ff ff ff", // frame as str32
        "92 91 db ff ff ff ff",                   // excluded id str32
    ];
    for case in invocations {
        let err = Invocation::decode(&Bytes::from(hex(case))).unwrap_err();
        assert!(is_truncation(&err), "{case}: {err}");
    }
    assert!(is_truncation(
        &GroupCommand::decode(&hex("95 01 db ff ff ff ff")).unwrap_err()
    ));
    assert!(is_truncation(
        &Ack::decode(&hex("dd ff ff ff ff")).unwrap_err()
    ));
    assert!(is_truncation(
        &ClientResultCompletion::decode(&Bytes::from(hex("92 a4 6a 73 6f 6e c6 ff ff ff ff")))
            .unwrap_err()
    ));
}

/// Negative ids, in every signed width, are refused; so are ids beyond u32.
#[test]
fn negative_and_oversized_ids_are_rejected() {
    for encoding in [
        "ff",
        "e0",
        "d0 ff",
        "d0 80",
        "d1 ff ff",
        "d2 80 00 00 00",
        "d3 ff ff ff ff ff ff ff ff",
    ] {
        let ack = [&[0x91][..], &hex(encoding)].concat();
        assert!(
            matches!(Ack::decode(&ack), Err(DecodeError::NegativeInteger { .. })),
            "{encoding}"
        );
        let command = group_command_bytes(&hex(encoding), &[1]);
        assert!(matches!(
            GroupCommand::decode(&command),
            Err(DecodeError::NegativeInteger { .. })
        ));
    }
    for encoding in [
        "cf 00 00 00 01 00 00 00 00",
        "cf ff ff ff ff ff ff ff ff",
        "d3 00 00 00 01 00 00 00 00",
    ] {
        let ack = [&[0x91][..], &hex(encoding)].concat();
        assert!(
            matches!(
                Ack::decode(&ack),
                Err(DecodeError::IntegerOutOfRange { .. })
            ),
            "{encoding}"
        );
    }
}

#[test]
fn unknown_group_actions_are_rejected() {
    for (encoding, value) in [("00", 0), ("03", 3), ("cc ff", 255), ("cd 01 01", 257)] {
        let err = GroupCommand::decode(&group_command_bytes(&[1], &hex(encoding))).unwrap_err();
        assert_eq!(err, DecodeError::UnknownGroupAction(value));
    }
    let err = GroupCommand::decode(&group_command_bytes(&[1], &hex("ff"))).unwrap_err();
    assert!(matches!(err, DecodeError::NegativeInteger { .. }));
}

/// A root that is not an array, or an array too short for its kind.
#[test]
fn non_array_roots_and_short_arrays_are_rejected() {
    for root in [
        "80",
        "c0",
        "01",
        "a4 6a 73 6f 6e",
        "c4 00",
        "c3",
        "cb 00 00 00 00 00 00 00 00",
        "c1",
    ] {
        let bytes = Bytes::from(hex(root));
        assert!(
            matches!(
                Invocation::decode(&bytes),
                Err(DecodeError::WrongType { .. })
            ),
            "{root}"
        );
        assert!(matches!(
            GroupCommand::decode(&bytes),
            Err(DecodeError::WrongType { .. })
        ));
        assert!(matches!(
            Ack::decode(&bytes),
            Err(DecodeError::WrongType { .. })
        ));
        assert!(matches!(
            ClientResultCompletion::decode(&bytes),
            Err(DecodeError::WrongType { .. })
        ));
    }
    assert!(matches!(
        Invocation::decode(&Bytes::from(hex("91 90"))),
        Err(DecodeError::TooFewElements { len: 1, min: 2, .. })
    ));
    assert!(matches!(
        GroupCommand::decode(&[&[0x94][..], &tv4()[1..]].concat()),
        Err(DecodeError::TooFewElements { len: 4, min: 5, .. })
    ));
    assert!(matches!(
        Ack::decode(&hex("90")),
        Err(DecodeError::TooFewElements { .. })
    ));
    assert!(matches!(
        ClientResultCompletion::decode(&Bytes::from(hex("91 a4 6a 73 6f 6e"))),
        Err(DecodeError::TooFewElements { .. })
    ));
}

/// Values of the wrong type in each field.
#[test]
fn wrong_types_are_rejected() {
    let invocations = [
        "92 80 80",                   // excluded ids as a map
        "92 c0 80",                   // excluded ids nil
        "92 91 01 80",                // excluded id as an int
        "92 90 90",                   // protocol map as an array
        "92 90 c0",                   // protocol map nil
        "92 90 81 01 c4 00",          // protocol name as an int
        "92 90 81 c0 c4 00",          // protocol name nil
        "92 90 81 c4 01 61 c4 00",    // protocol name as bin
        "92 90 81 a1 6a 01",          // frame as an int
        "92 90 81 a1 6a 90",          // frame as an array
        "92 90 81 a1 6a c7 01 01 00", // frame as an ext
        "94 90 80 01 a1 72",          // invocation id as an int
        "94 90 80 a1 69 c4 01 72",    // return channel as bin
    ];
    for case in invocations {
        let err = Invocation::decode(&Bytes::from(hex(case))).unwrap_err();
        assert!(
            matches!(err, DecodeError::WrongType { .. }),
            "{case}: {err}"
        );
    }
    let commands = [
        "95 a1 31 a1 73 01 a1 67 a1 63",          // id as a string
        "95 ca 3f 80 00 00 a1 73 01 a1 67 a1 63", // id as a float
        "95 01 01 01 a1 67 a1 63",                // server name as an int
        "95 01 c0 01 a1 67 a1 63",                // server name nil
        "95 01 a1 73 c3 a1 67 a1 63",             // action as a bool
        "95 01 a1 73 01 90 a1 63",                // group as an array
        "95 01 a1 73 01 a1 67 c4 01 63",          // connection id as bin
    ];
    for case in commands {
        let err = GroupCommand::decode(&hex(case)).unwrap_err();
        assert!(
            matches!(err, DecodeError::WrongType { .. }),
            "{case}: {err}"
        );
    }
    for case in [
        "91 c0",
        "91 a1 31",
        "91 c2",
        "91 cb 3f f0 00 00 00 00 00 00",
    ] {
        let err = Ack::decode(&hex(case)).unwrap_err();
        assert!(
            matches!(err, DecodeError::WrongType { .. }),
            "{case}: {err}"
        );
    }
    for case in ["92 01 c4 00", "92 a1 6a 01", "92 a1 6a 80"] {
        let err = ClientResultCompletion::decode(&Bytes::from(hex(case))).unwrap_err();
        assert!(
            matches!(err, DecodeError::WrongType { .. }),
            "{case}: {err}"
        );
    }
}

/// Deep nesting where a scalar is expected fails at the first level, without recursing.
#[test]
fn deeply_nested_values_are_rejected() {
    let mut deep = vec![0x91; 100_000];
    deep.push(0x01);
    assert!(matches!(
        Ack::decode(&deep),
        Err(DecodeError::WrongType {
            found: "fixarray",
            ..
        })
    ));

    let mut command = vec![0x95];
    command.extend(std::iter::repeat_n(0x81, 50_000));
    assert!(matches!(
        GroupCommand::decode(&command),
        Err(DecodeError::WrongType {
            found: "fixmap",
            ..
        })
    ));

    let mut invocation = hex("92 91");
    invocation.extend(std::iter::repeat_n(0x91, 50_000));
    assert!(matches!(
        Invocation::decode(&Bytes::from(invocation)),
        Err(DecodeError::WrongType { .. })
    ));
}

#[test]
fn invalid_utf8_strings_are_rejected() {
    let err = Invocation::decode(&Bytes::from(hex("92 91 a2 c3 28 80"))).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            what: "excluded connection id"
        }
    );
    let err = GroupCommand::decode(&hex("95 01 a1 ff 01 a1 67 a1 63")).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            what: "server name"
        }
    );
    let err = ClientResultCompletion::decode(&Bytes::from(hex("92 a1 80 c4 00"))).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            what: "protocol name"
        }
    );
}

/// Random corruptions of the vectors and random bytes never panic (the decoders return
/// either a value or an error).
#[test]
fn random_corruptions_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5167_6e61_6c52);
    let vectors = [
        tv1(),
        tv2(),
        tv3(),
        tv4(),
        tv4_remove_300(),
        tv5(),
        tv6(),
        tv7(),
    ];
    for round in 0..20_000 {
        let mut bytes = vectors[round % vectors.len()].to_vec();
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
            }
            1 => {
                let at = rng.random_range(0..=bytes.len());
                bytes.insert(at, rng.random());
            }
            2 => {
                let at = rng.random_range(0..bytes.len());
                bytes.remove(at);
            }
            _ => {
                let len = rng.random_range(0..64);
                bytes = (0..len).map(|_| rng.random()).collect();
            }
        }
        let bytes = Bytes::from(bytes);
        let _ = Invocation::decode(&bytes);
        let _ = GroupCommand::decode(&bytes);
        let _ = Ack::decode(&bytes);
        let _ = ClientResultCompletion::decode(&bytes);
    }
}
