//! Counters of what the backplane did: [`BackplaneStats`].
//!
//! Each counter exists twice: as a plain atomic, readable through
//! [`RedisHubLifetimeManager::stats`](crate::RedisHubLifetimeManager::stats) (tests and
//! health endpoints), and as a `metrics` counter labelled with the hub name (whatever
//! exporter the application installs). Handles are registered once per manager, never
//! per message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use metrics::{Counter, Gauge};

/// A snapshot of a manager's counters. Every value only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackplaneStats {
    /// Payloads Redis accepted (`signalr_backplane_publishes_total`): invocations, group
    /// commands, acks and client results.
    pub publishes: u64,
    /// Publishes that failed (`signalr_backplane_publish_errors_total`): Redis down, or an
    /// error reply.
    pub publish_errors: u64,
    /// Pub/sub messages received on this hub's channels
    /// (`signalr_backplane_messages_received_total`).
    pub messages_received: u64,
    /// Connections to Redis re-established after a loss
    /// (`signalr_backplane_reconnects_total`), publishing and subscribing alike.
    pub reconnects: u64,
    /// Hub messages that could not reach other nodes because their publish failed
    /// (`signalr_backplane_lost_messages_total`). Local connections still got them.
    pub lost_messages: u64,
    /// Payloads received that could not be decoded, or named no hub protocol this server
    /// speaks (`signalr_backplane_decode_errors_total`). Each is logged and skipped.
    pub decode_errors: u64,
    /// Messages received from Redis and dropped because this node's backlog of received
    /// messages not yet handed to its connections was over its bound (64 MiB): the node is
    /// not keeping up (`signalr_backplane_dropped_messages_total`).
    pub dropped_messages: u64,
}

macro_rules! counters {
    ($($field:ident => $metric:literal),* $(,)?) => {
        pub(crate) struct Counters {
            $($field: (AtomicU64, Counter),)*
        }

        impl Counters {
            pub(crate) fn new(hub: &str) -> Counters {
                Counters {
                    $($field: (
                        AtomicU64::new(0),
                        metrics::counter!($metric, "hub" => hub.to_owned()),
                    ),)*
                }
            }

            pub(crate) fn snapshot(&self) -> BackplaneStats {
                BackplaneStats {
                    $($field: self.$field.0.load(Ordering::Relaxed),)*
                }
            }

            $(
                pub(crate) fn $field(&self, n: u64) {
                    self.$field.0.fetch_add(n, Ordering::Relaxed);
                    self.$field.1.increment(n);
                }
            )*
        }
    };
}

counters! {
    publishes => "signalr_backplane_publishes_total",
    publish_errors => "signalr_backplane_publish_errors_total",
    messages_received => "signalr_backplane_messages_received_total",
    reconnects => "signalr_backplane_reconnects_total",
    lost_messages => "signalr_backplane_lost_messages_total",
    decode_errors => "signalr_backplane_decode_errors_total",
    dropped_messages => "signalr_backplane_dropped_messages_total",
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Whether the two Redis connections are up, and since when the backplane as a whole has
/// been connected (both up) or not: what the health report and the
/// `signalr_backplane_connected` gauge (1 or 0) say.
pub(crate) struct LinkState {
    /// The publishing connection is up, as far as the publisher task knows.
    publishing: AtomicBool,
    /// The subscription connection is up with every channel subscribed.
    subscribed: AtomicBool,
    /// Both up, and when that last changed. A lock, not atomics: the pair changes together.
    connected: Mutex<(bool, SystemTime)>,
    gauge: Gauge,
}

impl LinkState {
    /// Publishing up (the publisher starts with a connection), subscription not yet.
    pub(crate) fn new(hub: &str) -> LinkState {
        let gauge = metrics::gauge!("signalr_backplane_connected", "hub" => hub.to_owned());
        gauge.set(0.0);
        LinkState {
            publishing: AtomicBool::new(true),
            subscribed: AtomicBool::new(false),
            connected: Mutex::new((false, SystemTime::now())),
            gauge,
        }
    }

    pub(crate) fn set_publishing(&self, up: bool) {
        self.publishing.store(up, Ordering::Release);
        self.update();
    }

    pub(crate) fn set_subscribed(&self, live: bool) {
        self.subscribed.store(live, Ordering::Release);
        self.update();
    }

    pub(crate) fn publishing(&self) -> bool {
        self.publishing.load(Ordering::Acquire)
    }

    pub(crate) fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Both connections up, and since when that has been so (or not).
    pub(crate) fn connected(&self) -> (bool, SystemTime) {
        *self.lock()
    }

    fn update(&self) {
        let now = self.publishing() && self.subscribed();
        let mut connected = self.lock();
        if connected.0 != now {
            *connected = (now, SystemTime::now());
            self.gauge.set(if now { 1.0 } else { 0.0 });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, SystemTime)> {
        self.connected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
