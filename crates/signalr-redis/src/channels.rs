//! Redis channel names for one hub, and the name this server goes by on them.
//!
//! The names are the contract with ASP.NET Core nodes sharing the Redis server, so they are
//! built exactly as .NET's `RedisChannels` builds them: `{hub}:all`, `{hub}:group:{name}`,
//! `{hub}:user:{id}`, `{hub}:connection:{id}`, `{hub}:internal:groups`,
//! `{hub}:internal:ack:{server}` and `{hub}:internal:return:{server}`, where `{hub}` is the
//! hub's full name (`MyApp.Hubs.ChatHub` for a .NET hub class). Names, ids and server names
//! go in raw: no escaping, so a group name may contain `:`.
//!
//! In front of every name sits the optional `ChannelPrefix`. On .NET it is a
//! StackExchange.Redis setting, not a SignalR one: the client library prepends its bytes to
//! every channel it sends to Redis, with no separator, and strips them from channels it
//! receives. No Rust Redis client does that, so [`Channels`] does it: every name it returns
//! is the full name as it appears on the wire, and [`Channels::classify`] takes wire names.
//! The one exception is the return channel carried *inside* a client-result invocation,
//! which .NET writes without the prefix ([`Channels::envelope_return_channel`]).
//!
//! Names are bytes ([`Bytes`]) because the prefix is arbitrary bytes and Redis channel
//! names are binary-safe; they are cheap to clone into subscription maps and commands.
//!
//! This module does not talk to Redis; it only names things.

use bytes::{BufMut, Bytes, BytesMut};

const ALL: &[u8] = b"all";
const GROUP: &[u8] = b"group:";
const USER: &[u8] = b"user:";
const CONNECTION: &[u8] = b"connection:";
const INTERNAL_GROUPS: &[u8] = b"internal:groups";
const INTERNAL_ACK: &[u8] = b"internal:ack:";
const INTERNAL_RETURN: &[u8] = b"internal:return:";

/// The channel names of one hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// `{ChannelPrefix}{hub}:`, the start every channel of this hub shares on the wire.
    /// Built once because every name is this plus a suffix.
    base: Bytes,
    /// Length of the `ChannelPrefix` at the start of `base`; the rest is `{hub}:`, which is
    /// what the envelope's return channel starts with.
    prefix_len: usize,
    /// `all` and `internal:groups` are subscribed at startup and published to constantly;
    /// kept ready so handing them out is a reference-count increment.
    all: Bytes,
    internal_groups: Bytes,
}

/// What an incoming channel name is, from the point of view of one hub's [`Channels`].
/// Names borrow from the channel bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind<'a> {
    /// `{hub}:all`.
    All,
    /// `{hub}:group:{name}`; the name may contain `:`.
    Group(&'a str),
    /// `{hub}:user:{id}`.
    User(&'a str),
    /// `{hub}:connection:{id}`.
    Connection(&'a str),
    /// `{hub}:internal:groups`.
    InternalGroups,
    /// `{hub}:internal:ack:{server}`.
    Ack(&'a str),
    /// `{hub}:internal:return:{server}`.
    Return(&'a str),
    /// Not a channel of this hub (another prefix or hub, an unknown suffix, or a name
    /// that is not UTF-8).
    Unknown,
}

impl Channels {
    /// Names for the hub `hub_name` (its full name, e.g. `MyApp.Hubs.ChatHub`, to share
    /// channels with a .NET hub), behind `channel_prefix` (raw bytes, often empty; no
    /// separator is added, so include one in the prefix if you want one).
    pub fn new(channel_prefix: impl AsRef<[u8]>, hub_name: &str) -> Self {
        let prefix = channel_prefix.as_ref();
        let mut base = BytesMut::with_capacity(prefix.len() + hub_name.len() + 1);
        base.put_slice(prefix);
        base.put_slice(hub_name.as_bytes());
        base.put_u8(b':');
        let base = base.freeze();
        let all = join(&base, ALL, b"");
        let internal_groups = join(&base, INTERNAL_GROUPS, b"");
        Self {
            base,
            prefix_len: prefix.len(),
            all,
            internal_groups,
        }
    }

    /// The `ChannelPrefix` in front of every name.
    pub fn channel_prefix(&self) -> &[u8] {
        &self.base[..self.prefix_len]
    }

    /// `{prefix}{hub}:all`: broadcasts to every connection.
    pub fn all(&self) -> Bytes {
        self.all.clone()
    }

    /// `{prefix}{hub}:group:{group_name}`: messages to a group's members.
    pub fn group(&self, group_name: &str) -> Bytes {
        join(&self.base, GROUP, group_name.as_bytes())
    }

    /// `{prefix}{hub}:user:{user_id}`: messages to every connection of a user.
    pub fn user(&self, user_id: &str) -> Bytes {
        join(&self.base, USER, user_id.as_bytes())
    }

    /// `{prefix}{hub}:connection:{connection_id}`: messages to one connection.
    pub fn connection(&self, connection_id: &str) -> Bytes {
        join(&self.base, CONNECTION, connection_id.as_bytes())
    }

    /// `{prefix}{hub}:internal:groups`: group commands for connections on other servers.
    pub fn internal_groups(&self) -> Bytes {
        self.internal_groups.clone()
    }

    /// `{prefix}{hub}:internal:ack:{server_name}`: acks for the group commands
    /// `server_name` sent.
    pub fn ack(&self, server_name: &str) -> Bytes {
        join(&self.base, INTERNAL_ACK, server_name.as_bytes())
    }

    /// `{prefix}{hub}:internal:return:{server_name}`: client results for invocations
    /// `server_name` started.
    pub fn return_channel(&self, server_name: &str) -> Bytes {
        join(&self.base, INTERNAL_RETURN, server_name.as_bytes())
    }

    /// The return channel as written inside a client-result invocation envelope:
    /// `{hub}:internal:return:{server_name}`, *without* the `ChannelPrefix` (.NET writes
    /// it before StackExchange.Redis adds the prefix). Publish to it through
    /// [`prefixed`](Self::prefixed).
    ///
    /// The hub part is written lossily if the hub name came from invalid UTF-8, which
    /// cannot happen since [`new`](Self::new) takes a `&str`.
    pub fn envelope_return_channel(&self, server_name: &str) -> String {
        let hub = String::from_utf8_lossy(&self.base[self.prefix_len..]);
        let mut out = String::with_capacity(hub.len() + INTERNAL_RETURN.len() + server_name.len());
        out.push_str(&hub);
        out.push_str("internal:return:");
        out.push_str(server_name);
        out
    }

    /// Puts the `ChannelPrefix` in front of a channel name that came without it, i.e. the
    /// return channel read from a client-result invocation, giving the name to PUBLISH to.
    pub fn prefixed(&self, unprefixed_channel: &str) -> Bytes {
        join(
            &self.base[..self.prefix_len],
            unprefixed_channel.as_bytes(),
            b"",
        )
    }

    /// Says which of this hub's channels `channel` (a full wire name, prefix included) is.
    pub fn classify<'a>(&self, channel: &'a [u8]) -> ChannelKind<'a> {
        let Some(rest) = channel.strip_prefix(&self.base[..]) else {
            return ChannelKind::Unknown;
        };
        if rest == ALL {
            return ChannelKind::All;
        }
        if rest == INTERNAL_GROUPS {
            return ChannelKind::InternalGroups;
        }
        let kinds: [(&[u8], NamedKind<'a>); 5] = [
            (INTERNAL_ACK, ChannelKind::Ack),
            (INTERNAL_RETURN, ChannelKind::Return),
            (GROUP, ChannelKind::Group),
            (USER, ChannelKind::User),
            (CONNECTION, ChannelKind::Connection),
        ];
        for (start, kind) in kinds {
            if let Some(name) = rest.strip_prefix(start) {
                return match std::str::from_utf8(name) {
                    Ok(name) => kind(name),
                    Err(_) => ChannelKind::Unknown,
                };
            }
        }
        ChannelKind::Unknown
    }
}

/// Builds the [`ChannelKind`] of a channel that carries a name.
type NamedKind<'a> = fn(&'a str) -> ChannelKind<'a>;

fn join(base: &[u8], kind: &[u8], name: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(base.len() + kind.len() + name.len());
    out.put_slice(base);
    out.put_slice(kind);
    out.put_slice(name);
    out.freeze()
}

/// Fallback machine name when the host name cannot be read or sanitizes to nothing.
const DEFAULT_MACHINE_NAME: &str = "signalr-rs";

/// A fresh server name, `{machine name}_{32 lowercase hex digits}`, the shape .NET uses
/// (`{Environment.MachineName}_{Guid:N}`). It appears in the ack and return channel names
/// and in group commands; it only has to be unique, and one is made per hub per process.
pub fn generate_server_name() -> String {
    server_name_for_machine(&machine_name())
}

/// A fresh server name for the given machine name, sanitized as in [`machine_name`].
pub fn server_name_for_machine(machine_name: &str) -> String {
    let machine = sanitize_machine_name(machine_name);
    let id: u128 = rand::random();
    format!("{machine}_{id:032x}")
}

/// This machine's name, as .NET's `Environment.MachineName` gives it: the host name up
/// to its first `.`. Read from the kernel (`/proc/sys/kernel/hostname`), then
/// `/etc/hostname`, then the `HOSTNAME` environment variable, else `signalr-rs`.
/// Sanitized so it cannot turn a channel name into a Redis glob pattern or break a log line.
pub fn machine_name() -> String {
    let candidates = [
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|raw| sanitize_machine_name(&raw))
        .find(|name| name != DEFAULT_MACHINE_NAME)
        .unwrap_or_else(|| DEFAULT_MACHINE_NAME.to_owned())
}

/// Keeps the part before the first `.`, trims it, replaces the Redis glob characters
/// `* ? [ ] \`, whitespace and control characters with `-`, and caps the length at 63
/// characters (a DNS label). Empty results become `signalr-rs`.
fn sanitize_machine_name(raw: &str) -> String {
    let first_line = raw.lines().next().unwrap_or("").trim();
    let label = first_line.split('.').next().unwrap_or("");
    let name: String = label
        .chars()
        .take(63)
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => '-',
            c if c.is_whitespace() || c.is_control() => '-',
            c => c,
        })
        .collect();
    if name.is_empty() {
        DEFAULT_MACHINE_NAME.to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_the_label_and_replaces_glob_characters() {
        assert_eq!(sanitize_machine_name("web1\n"), "web1");
        assert_eq!(sanitize_machine_name("web1.example.com"), "web1");
        assert_eq!(
            sanitize_machine_name("a*b?c[d]e\\f g\th"),
            "a-b-c-d-e-f-g-h"
        );
        assert_eq!(sanitize_machine_name(""), DEFAULT_MACHINE_NAME);
        assert_eq!(sanitize_machine_name("  \n"), DEFAULT_MACHINE_NAME);
        assert_eq!(sanitize_machine_name(".hidden"), DEFAULT_MACHINE_NAME);
        assert_eq!(sanitize_machine_name(&"x".repeat(300)).len(), 63);
    }
}
