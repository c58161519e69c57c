//! Why the backplane could not start: [`BackplaneError`].
//!
//! Start-up errors name the Redis endpoint and say what is wrong in words an operator can
//! act on (unreachable, wrong password, timeout), because they are what a misconfigured
//! deployment prints before it exits.

use std::time::Duration;

/// Why [`RedisHubLifetimeManager::connect`](crate::RedisHubLifetimeManager::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The URL could not be parsed.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing answered at the address (refused, unreachable, DNS failure, TLS failure).
    #[error("cannot reach Redis at {endpoint}: {reason}")]
    Unreachable {
        /// `host:port`.
        endpoint: String,
        /// The underlying error.
        reason: String,
    },
    /// Redis refused the credentials, or requires some that were not given.
    #[error("Redis at {endpoint} refused the connection: {reason}")]
    Authentication {
        /// `host:port`.
        endpoint: String,
        /// What Redis said, with a hint.
        reason: String,
    },
    /// Connecting did not finish in time.
    #[error(
        "Redis at {endpoint} did not answer within {timeout:?} (is the address right, and is it a Redis server?)"
    )]
    Timeout {
        /// `host:port`.
        endpoint: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// Redis answered, but not as the backplane needs (e.g. no RESP3, no sharded pub/sub).
    #[error("Redis at {endpoint} cannot be used as a backplane: {reason}")]
    Unsupported {
        /// `host:port`.
        endpoint: String,
        /// What failed.
        reason: String,
    },
}

impl BackplaneError {
    /// Classifies a connection error from the redis client.
    pub(crate) fn from_connect(
        endpoint: &str,
        error: &redis::RedisError,
        timeout: Duration,
    ) -> Self {
        let endpoint = endpoint.to_owned();
        if error.is_timeout() {
            return BackplaneError::Timeout { endpoint, timeout };
        }
        let text = error.to_string();
        let code = error.code().unwrap_or_default();
        if matches!(error.kind(), redis::ErrorKind::AuthenticationFailed)
            || code == "WRONGPASS"
            || code == "NOAUTH"
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
            || text.contains("invalid password")
        {
            let hint = if code == "NOAUTH" || text.contains("NOAUTH") {
                "Redis requires a password; put it in the URL as redis://:PASSWORD@host:port"
            } else {
                "wrong password (or user) in the URL"
            };
            return BackplaneError::Authentication {
                endpoint,
                reason: format!("{hint} ({text})"),
            };
        }
        if matches!(error.kind(), redis::ErrorKind::RESP3NotSupported)
            || code == "NOPROTO"
            || text.contains("unknown command 'HELLO'")
        {
            return BackplaneError::Unsupported {
                endpoint,
                reason: format!("the backplane needs Redis 6 or later (RESP3): {text}"),
            };
        }
        if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped() {
            return BackplaneError::Unreachable {
                endpoint,
                reason: text,
            };
        }
        BackplaneError::Unsupported {
            endpoint,
            reason: text,
        }
    }
}
