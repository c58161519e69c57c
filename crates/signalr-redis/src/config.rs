//! How a [`RedisHubLifetimeManager`](crate::RedisHubLifetimeManager) reaches Redis and names
//! its channels: [`RedisConfig`].
//!
//! Everything comes from one URL plus a handful of settings, so an application can take the
//! whole backplane configuration from a command-line flag or an environment variable.

use std::time::Duration;

use redis::io::tcp::TcpSettings;
use redis::{ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

use crate::error::BackplaneError;

/// Default hub channel name when none is configured.
pub const DEFAULT_HUB_NAME: &str = "SignalR.Hub";

/// Settings of the Redis backplane.
///
/// ```
/// use std::time::Duration;
/// use signalr_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://:secret@127.0.0.1:6379")
///     .hub_name("MyApp.Hubs.ChatHub")      // the .NET hub's full type name
///     .channel_prefix("MyApp")             // StackExchange.Redis ChannelPrefix, raw
///     .connect_timeout(Duration::from_secs(3));
/// assert_eq!(config.hub_name_str(), "MyApp.Hubs.ChatHub");
/// ```
#[derive(Debug, Clone)]
pub struct RedisConfig {
    url: String,
    channel_prefix: Vec<u8>,
    hub_name: String,
    server_name: Option<String>,
    connect_timeout: Duration,
    response_timeout: Duration,
    ack_timeout: Duration,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    health_check_interval: Duration,
    sharded: bool,
    /// PEM root certificate(s) trusted for `rediss://` instead of the web PKI roots.
    tls_root_certificate: Option<Vec<u8>>,
}

impl RedisConfig {
    /// Settings for the Redis at `url`: `redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://...` for TLS (needs the `tls` feature, on by default). In sharded mode the
    /// URL names any node of the cluster; the others are discovered.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            channel_prefix: Vec::new(),
            hub_name: DEFAULT_HUB_NAME.to_owned(),
            server_name: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            reconnect_min_delay: Duration::from_millis(50),
            reconnect_max_delay: Duration::from_millis(500),
            health_check_interval: Duration::from_secs(5),
            sharded: false,
            tls_root_certificate: None,
        }
    }

    /// The hub's channel name, `{hub}` in `{hub}:all`, `{hub}:group:{name}`, ... To share
    /// channels with an ASP.NET Core hub, use its full type name (`MyApp.Hubs.ChatHub`).
    /// Default: [`DEFAULT_HUB_NAME`].
    pub fn hub_name(mut self, hub_name: impl Into<String>) -> Self {
        self.hub_name = hub_name.into();
        self
    }

    /// Bytes put in front of every channel name with no separator, as StackExchange.Redis's
    /// `ChannelPrefix` does (`"MyApp"` gives `MyAppMyApp.Hubs.ChatHub:all`). Isolates
    /// applications sharing one Redis. Default: none.
    pub fn channel_prefix(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.channel_prefix = prefix.as_ref().to_vec();
        self
    }

    /// This node's name in ack and return channels. Default: `{machine}_{32 hex digits}`,
    /// fresh for every manager, as .NET does. It must be unique across the nodes.
    pub fn server_name(mut self, server_name: impl Into<String>) -> Self {
        self.server_name = Some(server_name.into());
        self
    }

    /// How long one connection attempt may take (TCP, TLS, `HELLO`/`AUTH`). Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command (publish, subscribe, ping) may wait for Redis's reply before the
    /// connection is considered broken. Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long adding or removing a connection of another node to or from a group waits
    /// for that node's acknowledgement. Default 30 s, as on .NET.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Delays between reconnection attempts: from `min`, doubling, capped at `max`.
    /// Defaults 50 ms and 500 ms, so delivery resumes within about half a second of Redis
    /// coming back.
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min_delay = min;
        self.reconnect_max_delay = max.max(min);
        self
    }

    /// How often an idle subscription connection is checked with `PING` (catches half-open
    /// TCP connections that never report an error). Default 5 s.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval;
        self
    }

    /// Sharded pub/sub on a Redis Cluster (Redis 7+): `SPUBLISH`/`SSUBSCRIBE` through the
    /// cluster client, so each channel lives on one shard instead of being broadcast to
    /// every node. **Not understood by ASP.NET Core nodes**, which use classic pub/sub:
    /// turn it on only when every node is a signalr-rs node. Default: off (classic
    /// `PUBLISH`/`SUBSCRIBE`, which also works against a cluster through any one node).
    pub fn sharded(mut self, sharded: bool) -> Self {
        self.sharded = sharded;
        self
    }

    /// Trusts these PEM root certificates for `rediss://` connections (a private CA, or
    /// a self-signed server certificate) instead of the built-in web PKI roots.
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// The URL, as given (with its password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The configured hub channel name.
    pub fn hub_name_str(&self) -> &str {
        &self.hub_name
    }

    /// The configured channel prefix.
    pub fn channel_prefix_bytes(&self) -> &[u8] {
        &self.channel_prefix
    }

    /// Whether sharded pub/sub is on.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    pub(crate) fn configured_server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    pub(crate) fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn response_timeout_value(&self) -> Duration {
        self.response_timeout
    }

    pub(crate) fn ack_timeout_value(&self) -> Duration {
        self.ack_timeout
    }

    pub(crate) fn reconnect_delays(&self) -> (Duration, Duration) {
        (self.reconnect_min_delay, self.reconnect_max_delay)
    }

    pub(crate) fn health_check_interval_value(&self) -> Duration {
        self.health_check_interval
    }

    /// Parses the URL into connection settings: RESP3 (pub/sub messages arrive as pushes on
    /// a multiplexed connection), `TCP_NODELAY` on (no Nagle stalls on small publishes).
    pub(crate) fn connection_info(&self) -> Result<ConnectionInfo, BackplaneError> {
        let info = self.url.as_str().into_connection_info().map_err(|error| {
            BackplaneError::InvalidUrl {
                url: self.redacted_url(),
                reason: error.to_string(),
            }
        })?;
        let redis = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(redis)
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        self.with_tls_roots(info)
    }

    #[cfg(feature = "tls")]
    fn with_tls_roots(&self, info: ConnectionInfo) -> Result<ConnectionInfo, BackplaneError> {
        let Some(pem) = &self.tls_root_certificate else {
            return Ok(info);
        };
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        redis::Client::build_with_tls(info, certificates)
            .map(|client| client.get_connection_info().clone())
            .map_err(|error| BackplaneError::InvalidUrl {
                url: self.redacted_url(),
                reason: format!("TLS root certificate: {error}"),
            })
    }

    #[cfg(not(feature = "tls"))]
    fn with_tls_roots(&self, info: ConnectionInfo) -> Result<ConnectionInfo, BackplaneError> {
        Ok(info)
    }
}

/// Replaces the password (and user) of a URL with `***`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6390/0"),
            "redis://***@127.0.0.1:6390/0"
        );
        assert_eq!(redact("redis://u:p@w@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://127.0.0.1:6390"), "redis://127.0.0.1:6390");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn bad_urls_are_reported_without_the_password() {
        let error = RedisConfig::new("http://:secret@host:1")
            .connection_info()
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("invalid Redis URL"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
