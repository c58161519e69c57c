//! Counters of what the backplane did: [`BackplaneStats`].
//!
//! Each counter exists twice: as a plain atomic, readable through
//! [`RedisHubLifetimeManager::stats`](crate::RedisHubLifetimeManager::stats) (tests and
//! health endpoints), and as a `metrics` counter labelled with the hub name (whatever
//! exporter the application installs). Handles are registered once per manager, never
//! per message.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;

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
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}
