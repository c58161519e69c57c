//! The table of logical connections an endpoint knows by token.
//!
//! Negotiate creates an entry; the transport request that follows (`?id=TOKEN`) claims it.
//! An entry that is never claimed (the JS client re-negotiates for every transport it tries,
//! abandoning the earlier tokens) is reaped after the disconnect timeout, so abandoned
//! negotiations cannot pile up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

use super::TransportType;

/// A new random id: 16 random bytes, base64url without padding (22 characters), URL-safe as
/// the clients need (they put tokens in URLs without encoding them).
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a token could not be claimed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// No such token (never negotiated, expired or already gone): HTTP 404.
    NotFound,
    /// The connection already has an active transport request of this kind: HTTP 409.
    Conflict,
    /// The connection uses another transport: HTTP 400.
    WrongTransport,
}

#[derive(Debug)]
struct Entry {
    connection_id: Arc<str>,
    negotiated_at: Instant,
    active: Option<TransportType>,
}

/// Token → connection entries of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTable {
    entries: Mutex<HashMap<String, Entry>>,
}

impl ConnectionTable {
    /// Record a negotiated connection.
    pub(crate) fn insert_negotiated(&self, token: String, connection_id: Arc<str>) {
        self.lock().insert(
            token,
            Entry {
                connection_id,
                negotiated_at: Instant::now(),
                active: None,
            },
        );
    }

    /// Claim a negotiated connection for a transport request.
    pub(crate) fn claim(
        &self,
        token: &str,
        transport: TransportType,
    ) -> Result<Arc<str>, ClaimError> {
        let mut entries = self.lock();
        let entry = entries.get_mut(token).ok_or(ClaimError::NotFound)?;
        match entry.active {
            None => {
                entry.active = Some(transport);
                Ok(entry.connection_id.clone())
            }
            Some(active) if active == transport => Err(ClaimError::Conflict),
            Some(_) => Err(ClaimError::WrongTransport),
        }
    }

    /// Forget a connection whose transport has ended.
    pub(crate) fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    /// Drop negotiated connections never claimed within `timeout`. Returns how many.
    pub(crate) fn reap(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, entry| {
            entry.active.is_some() || now.duration_since(entry.negotiated_at) < timeout
        });
        before - entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_22_url_safe_characters() {
        let id = new_id();
        assert_eq!(id.len(), 22);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(id, new_id());
    }

    #[test]
    fn a_token_is_claimed_once_per_transport() {
        let table = ConnectionTable::default();
        table.insert_negotiated("t".into(), "c".into());
        assert_eq!(
            table.claim("t", TransportType::WebSockets).as_deref(),
            Ok("c")
        );
        assert_eq!(
            table.claim("t", TransportType::WebSockets),
            Err(ClaimError::Conflict)
        );
        assert_eq!(
            table.claim("t", TransportType::LongPolling),
            Err(ClaimError::WrongTransport)
        );
        assert_eq!(
            table.claim("nope", TransportType::WebSockets),
            Err(ClaimError::NotFound)
        );
    }

    #[test]
    fn unclaimed_negotiations_are_reaped() {
        let table = ConnectionTable::default();
        table.insert_negotiated("old".into(), "a".into());
        table.insert_negotiated("used".into(), "b".into());
        table.claim("used", TransportType::WebSockets).unwrap();
        assert_eq!(table.reap(Duration::ZERO), 1);
        assert_eq!(table.lock().len(), 1);
        assert_eq!(table.reap(Duration::from_secs(60)), 0);
    }
}
