//! Channel names as ASP.NET Core's `RedisChannels` builds them (redis-backplane.md §1.2),
//! with StackExchange.Redis's `ChannelPrefix` in front, and the way back from a name to
//! what it is for.

use signalr_redis::channels::{
    ChannelKind, Channels, generate_server_name, machine_name, server_name_for_machine,
};

const HUB: &str = "MyApp.Hubs.ChatHub";
const SERVER: &str = "web1_02db60e5fab243b890a847fa5c4dcb29";

/// Without a prefix, every name is `{hub}:{kind}{name}`.
#[test]
fn names_without_prefix() {
    let channels = Channels::new("", HUB);
    assert_eq!(channels.all(), "MyApp.Hubs.ChatHub:all");
    assert_eq!(channels.group("admins"), "MyApp.Hubs.ChatHub:group:admins");
    assert_eq!(channels.user("alice"), "MyApp.Hubs.ChatHub:user:alice");
    assert_eq!(
        channels.connection("7M5K5ZgOGHhJeOmV0TjLmQ"),
        "MyApp.Hubs.ChatHub:connection:7M5K5ZgOGHhJeOmV0TjLmQ"
    );
    assert_eq!(
        channels.internal_groups(),
        "MyApp.Hubs.ChatHub:internal:groups"
    );
    assert_eq!(
        channels.ack(SERVER),
        "MyApp.Hubs.ChatHub:internal:ack:web1_02db60e5fab243b890a847fa5c4dcb29"
    );
    assert_eq!(
        channels.return_channel(SERVER),
        "MyApp.Hubs.ChatHub:internal:return:web1_02db60e5fab243b890a847fa5c4dcb29"
    );
    assert_eq!(channels.channel_prefix(), b"");
}

/// The prefix is prepended as raw bytes with no separator: `ChannelPrefix = "MyApp"` gives
/// `MyAppMyApp.Hubs.ChatHub:all`, as StackExchange.Redis puts it on the wire.
#[test]
fn prefix_is_prepended_without_separator() {
    let channels = Channels::new("MyApp", HUB);
    assert_eq!(channels.all(), "MyAppMyApp.Hubs.ChatHub:all");
    assert_eq!(channels.group("g"), "MyAppMyApp.Hubs.ChatHub:group:g");
    assert_eq!(
        channels.internal_groups(),
        "MyAppMyApp.Hubs.ChatHub:internal:groups"
    );
    assert_eq!(
        channels.return_channel("s"),
        "MyAppMyApp.Hubs.ChatHub:internal:return:s"
    );

    let channels = Channels::new(String::from("BlogApp:SignalR:"), HUB);
    assert_eq!(
        channels.user("u"),
        "BlogApp:SignalR:MyApp.Hubs.ChatHub:user:u"
    );

    let channels = Channels::new(&[0xff, 0x00][..], HUB);
    assert_eq!(channels.all(), &b"\xff\x00MyApp.Hubs.ChatHub:all"[..]);
    assert_eq!(channels.channel_prefix(), &[0xff, 0x00]);
}

/// Names go in raw: a group name may contain `:` or glob characters.
#[test]
fn names_are_not_escaped() {
    let channels = Channels::new("", HUB);
    assert_eq!(channels.group("a:b:c"), "MyApp.Hubs.ChatHub:group:a:b:c");
    assert_eq!(channels.group("*?[x]"), "MyApp.Hubs.ChatHub:group:*?[x]");
    assert_eq!(channels.group(""), "MyApp.Hubs.ChatHub:group:");
}

/// The return channel inside a client-result envelope has no prefix (TV6's string), and
/// prefixing it gives the channel to publish the completion on.
#[test]
fn envelope_return_channel_omits_the_prefix() {
    let channels = Channels::new("", HUB);
    assert_eq!(
        channels.envelope_return_channel(SERVER),
        "MyApp.Hubs.ChatHub:internal:return:web1_02db60e5fab243b890a847fa5c4dcb29"
    );

    let channels = Channels::new("MyApp", HUB);
    let inside = channels.envelope_return_channel(SERVER);
    assert_eq!(
        inside,
        "MyApp.Hubs.ChatHub:internal:return:web1_02db60e5fab243b890a847fa5c4dcb29"
    );
    assert_eq!(channels.prefixed(&inside), channels.return_channel(SERVER));
}

/// Every name a hub produces classifies back to what it was built from.
#[test]
fn classify_round_trips() {
    for prefix in [&b""[..], b"MyApp", b"x:", b"\xff\xfe"] {
        let channels = Channels::new(prefix, HUB);
        assert_eq!(channels.classify(&channels.all()), ChannelKind::All);
        assert_eq!(
            channels.classify(&channels.internal_groups()),
            ChannelKind::InternalGroups
        );
        for name in [
            "admins",
            "a:b:c",
            "group:x",
            "internal:groups",
            "all",
            "",
            "ümlaut",
        ] {
            assert_eq!(
                channels.classify(&channels.group(name)),
                ChannelKind::Group(name)
            );
            assert_eq!(
                channels.classify(&channels.user(name)),
                ChannelKind::User(name)
            );
            assert_eq!(
                channels.classify(&channels.connection(name)),
                ChannelKind::Connection(name)
            );
            assert_eq!(
                channels.classify(&channels.ack(name)),
                ChannelKind::Ack(name)
            );
            assert_eq!(
                channels.classify(&channels.return_channel(name)),
                ChannelKind::Return(name)
            );
        }
    }
}

/// Names of other prefixes, other hubs, unknown kinds and non-UTF-8 names are not ours.
#[test]
fn classify_rejects_foreign_names() {
    let channels = Channels::new("MyApp", HUB);
    let other_prefix = Channels::new("Other", HUB);
    let other_hub = Channels::new("MyApp", "MyApp.Hubs.OtherHub");
    let unprefixed = Channels::new("", HUB);
    for foreign in [
        other_prefix.all(),
        other_hub.group("g"),
        unprefixed.all(),
        other_prefix.internal_groups(),
    ] {
        assert_eq!(
            channels.classify(&foreign),
            ChannelKind::Unknown,
            "{foreign:?}"
        );
    }
    for raw in [
        &b""[..],
        b"MyApp",
        b"MyAppMyApp.Hubs.ChatHub",
        b"MyAppMyApp.Hubs.ChatHub:",
        b"MyAppMyApp.Hubs.ChatHub:all2",
        b"MyAppMyApp.Hubs.ChatHub:internal:other",
        b"MyAppMyApp.Hubs.ChatHub:internal:groups:x",
        b"MyAppMyApp.Hubs.ChatHub:groups:x",
        b"MyAppMyApp.Hubs.ChatHub:group",
        b"MyAppMyApp.Hubs.ChatHub:group:\xff",
        b"MyAppMyApp.Hubs.ChatHubX:all",
    ] {
        assert_eq!(
            channels.classify(raw),
            ChannelKind::Unknown,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

fn assert_server_name_shape(name: &str, machine: &str) {
    let (head, id) = name.rsplit_once('_').expect("an underscore");
    assert_eq!(head, machine);
    assert_eq!(id.len(), 32, "{name}");
    assert!(
        id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{name}"
    );
}

/// `{machine}_{32 lowercase hex}`, fresh every time.
#[test]
fn server_names_have_the_dotnet_shape() {
    let name = server_name_for_machine("web1");
    assert_server_name_shape(&name, "web1");
    assert_ne!(server_name_for_machine("web1"), name);

    let machine = machine_name();
    assert!(!machine.is_empty());
    let name = generate_server_name();
    assert_server_name_shape(&name, &machine);
}

/// The machine name is cut at the first dot (like .NET's `Environment.MachineName`) and
/// glob characters and whitespace are replaced, so the name is safe in a channel name.
#[test]
fn machine_names_are_sanitized() {
    assert_server_name_shape(&server_name_for_machine("web1.example.com"), "web1");
    assert_server_name_shape(&server_name_for_machine("we*b?[1] x\n"), "we-b--1--x");
    assert_server_name_shape(&server_name_for_machine(""), "signalr-rs");
    let machine = machine_name();
    assert!(
        !machine.contains(['*', '?', '[', ']', '\\', ' ', '\n', '.']),
        "{machine}"
    );
}
