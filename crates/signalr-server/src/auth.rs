//! Authentication at the HTTP level: who is making a request, and whether the hub lets them in.
//!
//! This module owns the [`Identity`] of a caller, the pluggable [`Authenticator`] that
//! establishes it from a request, and the hub-wide [`AuthOptions`] (an authenticator,
//! whether authentication is required, an authorization check). It knows nothing of axum,
//! transports or hubs, so both sides can use it: the transport layer runs the authenticator
//! on every HTTP request of an endpoint (negotiate, the WebSocket upgrade, the SSE stream,
//! every long poll, send and delete), and the hub layer reads the identity of the request
//! that started a connection ([`Context::identity`](crate::Context::identity)).
//!
//! A connection's identity is the one of the request that started it (the WebSocket upgrade,
//! the event stream, the first long poll). Later requests of the connection (polls, sends)
//! are authenticated and authorized again and refused with `401`/`403` as any other, but a
//! different identity on them does not replace the connection's (ASP.NET Core only logs
//! such a change).
//!
//! The bearer token is taken from `Authorization: Bearer …` or, because browsers cannot set
//! headers on WebSockets and EventSource, from the `access_token` query parameter (the
//! official clients use both, see protocol.md §11).
//!
//! Outcomes at the HTTP level, as ASP.NET Core answers them:
//!
//! | authenticator | `require_authentication` / `authorize` | answer |
//! |---|---|---|
//! | `Err(_)` (refused) | any | `401`, `WWW-Authenticate: Bearer error="invalid_token"` |
//! | `Ok(None)` (anonymous) | required, or an `authorize` check is set | `401`, `WWW-Authenticate: Bearer` |
//! | `Ok(None)` | neither | the request goes on, anonymous |
//! | `Ok(Some(identity))` | `authorize(identity)` is false | `403` |
//! | `Ok(Some(identity))` | otherwise | the request goes on with that identity |

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// Who a request comes from, as an [`Authenticator`] established it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user identifier (ASP.NET Core's NameIdentifier claim, a JWT's `sub`). A hub uses
    /// it as the connection's user id for `Clients::user` unless the hub has its own
    /// user-id provider.
    pub user_id: Option<String>,
    /// A display name.
    pub name: Option<String>,
    /// Further claims, in the order the authenticator gave them. A key may repeat
    /// (e.g. several roles).
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// An identity for a user id.
    pub fn user(user_id: impl Into<String>) -> Identity {
        Identity {
            user_id: Some(user_id.into()),
            ..Identity::default()
        }
    }

    /// Add a display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Identity {
        self.name = Some(name.into());
        self
    }

    /// Add a claim.
    pub fn with_claim(mut self, key: impl Into<String>, value: impl Into<String>) -> Identity {
        self.claims.push((key.into(), value.into()));
        self
    }

    /// The first value of a claim.
    pub fn claim(&self, key: &str) -> Option<&str> {
        self.claims
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a claim with this value is present (e.g. `has_claim("role", "admin")`).
    pub fn has_claim(&self, key: &str, value: &str) -> bool {
        self.claims.iter().any(|(k, v)| k == key && v == value)
    }
}

/// Why an [`Authenticator`] refused a request (answered with `401`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authentication refused: {reason}")]
pub struct AuthError {
    reason: String,
}

impl AuthError {
    /// A refusal; the reason is logged, never sent to the client.
    pub fn new(reason: impl Into<String>) -> AuthError {
        AuthError {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Establishes who an HTTP request comes from.
///
/// Called for every HTTP request of a hub endpoint with the request head and the bearer
/// token (from `Authorization: Bearer` or the `access_token` query parameter, `None` if
/// neither is present). Return `Ok(Some(identity))` for an authenticated caller, `Ok(None)`
/// for an anonymous one, `Err` to refuse the request with `401`.
///
/// ```
/// use std::collections::HashMap;
/// use signalr_server::auth::{AuthError, Authenticator, Identity};
///
/// /// Tokens handed out by some login service, token → user.
/// struct Tokens(HashMap<String, String>);
///
/// #[async_trait::async_trait]
/// impl Authenticator for Tokens {
///     async fn authenticate(
///         &self,
///         _request: &http::request::Parts,
///         token: Option<&str>,
///     ) -> Result<Option<Identity>, AuthError> {
///         match token {
///             None => Ok(None),
///             Some(token) => match self.0.get(token) {
///                 Some(user) => Ok(Some(Identity::user(user))),
///                 None => Err(AuthError::new("unknown token")),
///             },
///         }
///     }
/// }
/// ```
///
/// A plain function or closure `Fn(&Parts, Option<&str>) -> Result<Option<Identity>,
/// AuthError>` is an authenticator too, for checks that need no IO.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticate one request.
    async fn authenticate(
        &self,
        request: &http::request::Parts,
        token: Option<&str>,
    ) -> Result<Option<Identity>, AuthError>;
}

#[async_trait]
impl<F> Authenticator for F
where
    F: Fn(&http::request::Parts, Option<&str>) -> Result<Option<Identity>, AuthError>
        + Send
        + Sync
        + 'static,
{
    async fn authenticate(
        &self,
        request: &http::request::Parts,
        token: Option<&str>,
    ) -> Result<Option<Identity>, AuthError> {
        self(request, token)
    }
}

/// The per-hub authorization check: may this (authenticated) caller use the hub?
pub type Authorize = Arc<dyn Fn(&Identity) -> bool + Send + Sync>;

/// Authentication settings of one hub endpoint. Default: no authenticator, everyone is
/// anonymous and let in.
#[derive(Clone, Default)]
pub struct AuthOptions {
    /// Establishes the caller's identity on every request.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Refuse anonymous requests with `401`.
    pub require_authentication: bool,
    /// ASP.NET Core's `[Authorize]` on the hub: anonymous requests get `401`, authenticated
    /// ones for which this returns false get `403`.
    pub authorize: Option<Authorize>,
}

impl fmt::Debug for AuthOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthOptions")
            .field("authenticator", &self.authenticator.is_some())
            .field("require_authentication", &self.require_authentication)
            .field("authorize", &self.authorize.is_some())
            .finish()
    }
}

/// What the authentication of one request decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Let the request in, with this identity (`None`: anonymous).
    Allowed(Option<Arc<Identity>>),
    /// `401`: no acceptable credentials. `refused` tells an invalid token from a missing one.
    Unauthenticated {
        /// The authenticator refused the credentials (as opposed to none being presented).
        refused: bool,
    },
    /// `403`: authenticated, but the hub's authorization check said no.
    Forbidden,
}

impl AuthOptions {
    /// Whether any check runs at all (a cheap test to skip the work for open hubs).
    pub fn is_enabled(&self) -> bool {
        self.authenticator.is_some() || self.require_authentication || self.authorize.is_some()
    }

    /// Authenticate and authorize one request.
    pub async fn check(&self, request: &http::request::Parts) -> AuthOutcome {
        let identity = match &self.authenticator {
            None => None,
            Some(authenticator) => {
                let token = bearer_token(request);
                match authenticator.authenticate(request, token.as_deref()).await {
                    Ok(identity) => identity.map(Arc::new),
                    Err(error) => {
                        tracing::debug!(reason = error.reason(), uri = %request.uri, "request refused by the authenticator");
                        return AuthOutcome::Unauthenticated { refused: true };
                    }
                }
            }
        };
        match (&identity, &self.authorize) {
            (None, authorize) if self.require_authentication || authorize.is_some() => {
                AuthOutcome::Unauthenticated { refused: false }
            }
            (Some(identity), Some(authorize)) if !authorize(identity) => AuthOutcome::Forbidden,
            _ => AuthOutcome::Allowed(identity),
        }
    }
}

/// The bearer token of a request: the `Authorization: Bearer` header, else the
/// `access_token` query parameter.
pub fn bearer_token(request: &http::request::Parts) -> Option<String> {
    let from_header = request
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
        .filter(|token| !token.is_empty());
    from_header.or_else(|| {
        let query = request.uri.query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "access_token")
            .map(|(_, value)| value.into_owned())
            .filter(|token| !token.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, authorization: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_token_from_header_then_query() {
        assert_eq!(
            bearer_token(&parts("/hub?access_token=q", Some("Bearer h"))).as_deref(),
            Some("h")
        );
        assert_eq!(
            bearer_token(&parts("/hub?id=1&access_token=a%20b", None)).as_deref(),
            Some("a b")
        );
        assert_eq!(
            bearer_token(&parts("/hub", Some("bearer  spaced "))).as_deref(),
            Some("spaced")
        );
        assert_eq!(bearer_token(&parts("/hub", Some("Basic abc"))), None);
        assert_eq!(bearer_token(&parts("/hub?access_token=", None)), None);
    }

    fn tokens(
        _: &http::request::Parts,
        token: Option<&str>,
    ) -> Result<Option<Identity>, AuthError> {
        match token {
            None => Ok(None),
            Some("alice-token") => Ok(Some(Identity::user("alice").with_claim("role", "admin"))),
            Some("bob-token") => Ok(Some(Identity::user("bob"))),
            Some(_) => Err(AuthError::new("unknown token")),
        }
    }

    #[tokio::test]
    async fn outcomes() {
        let open = AuthOptions {
            authenticator: Some(Arc::new(tokens)),
            ..AuthOptions::default()
        };
        assert_eq!(
            open.check(&parts("/hub", None)).await,
            AuthOutcome::Allowed(None)
        );
        assert_eq!(
            open.check(&parts("/hub", Some("Bearer nope"))).await,
            AuthOutcome::Unauthenticated { refused: true }
        );
        match open
            .check(&parts("/hub?access_token=bob-token", None))
            .await
        {
            AuthOutcome::Allowed(Some(identity)) => {
                assert_eq!(identity.user_id.as_deref(), Some("bob"))
            }
            other => panic!("{other:?}"),
        }

        let required = AuthOptions {
            require_authentication: true,
            ..open.clone()
        };
        assert_eq!(
            required.check(&parts("/hub", None)).await,
            AuthOutcome::Unauthenticated { refused: false }
        );

        let admins = AuthOptions {
            authorize: Some(Arc::new(|identity: &Identity| {
                identity.has_claim("role", "admin")
            })),
            ..open
        };
        assert_eq!(
            admins.check(&parts("/hub", None)).await,
            AuthOutcome::Unauthenticated { refused: false }
        );
        assert_eq!(
            admins.check(&parts("/hub", Some("Bearer bob-token"))).await,
            AuthOutcome::Forbidden
        );
        assert!(matches!(
            admins
                .check(&parts("/hub", Some("Bearer alice-token")))
                .await,
            AuthOutcome::Allowed(Some(_))
        ));
    }
}
