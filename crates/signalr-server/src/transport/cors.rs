//! Cross-origin requests: browsers on another origin reaching a hub endpoint.
//!
//! Off unless [`TransportOptions::cors`](super::TransportOptions::cors) is set. When on, it
//! is a layer on the endpoint's routes only (negotiate and `{path}`), so it never touches the
//! application's other routes.
//!
//! The official JS client sends credentials by default (`withCredentials: true`), and a
//! browser refuses a credentialed response carrying `Access-Control-Allow-Origin: *`. So an
//! allowed origin is always echoed exactly, with `Access-Control-Allow-Credentials: true`
//! (unless credentials are turned off). Preflights (`OPTIONS` with
//! `Access-Control-Request-Method`) are answered here, before authentication, as browsers
//! send them without credentials. A request from an origin that is not allowed gets no CORS
//! headers at all, so the browser keeps the response from the page; the request itself is
//! served as any other (CORS protects the reader, not the server).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Request headers the official clients send cross-origin, always allowed.
const CLIENT_HEADERS: [&str; 4] = [
    "authorization",
    "content-type",
    "x-requested-with",
    "x-signalr-user-agent",
];

/// Methods the endpoint answers cross-origin.
const METHODS: &str = "GET, POST, DELETE, OPTIONS";

/// Which origins may call the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Every origin (each is still echoed exactly, for credentials).
    Any,
    /// These origins, e.g. `https://app.example.com` (scheme, host and port; compared without
    /// regard to case or a trailing slash).
    List(Vec<String>),
}

/// CORS settings of a hub endpoint.
///
/// ```
/// use signalr_server::transport::CorsOptions;
///
/// let cors = CorsOptions::allow_origins(["https://app.example.com"]).allow_header("x-tenant");
/// # let _ = cors;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOptions {
    /// Origins allowed to call the endpoint.
    pub allowed_origins: AllowedOrigins,
    /// Answer with `Access-Control-Allow-Credentials: true` (cookies and the
    /// `Authorization` header). Default: true, as the JS client sends credentials.
    pub allow_credentials: bool,
    /// Request headers allowed besides those the official clients send (`authorization`,
    /// `content-type`, `x-requested-with`, `x-signalr-user-agent`): headers an application
    /// adds through the client's `headers` option.
    pub extra_headers: Vec<String>,
    /// How long browsers may cache a preflight answer (`Access-Control-Max-Age`). Default:
    /// not sent (browsers then use their own short default).
    pub max_age: Option<Duration>,
}

impl CorsOptions {
    /// Allow these origins.
    pub fn allow_origins<I, O>(origins: I) -> CorsOptions
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        CorsOptions {
            allowed_origins: AllowedOrigins::List(
                origins
                    .into_iter()
                    .map(|origin| normalize(&origin.into()))
                    .collect(),
            ),
            allow_credentials: true,
            extra_headers: Vec::new(),
            max_age: None,
        }
    }

    /// Allow every origin.
    pub fn allow_any_origin() -> CorsOptions {
        CorsOptions {
            allowed_origins: AllowedOrigins::Any,
            ..CorsOptions::allow_origins(Vec::<String>::new())
        }
    }

    /// Allow one more request header.
    pub fn allow_header(mut self, name: impl Into<String>) -> CorsOptions {
        self.extra_headers.push(name.into().to_ascii_lowercase());
        self
    }

    /// Whether `origin` may call the endpoint.
    pub fn allows(&self, origin: &str) -> bool {
        match &self.allowed_origins {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(origins) => {
                let origin = normalize(origin);
                origins.iter().any(|allowed| normalize(allowed) == origin)
            }
        }
    }

    /// The CORS headers for an allowed `origin`.
    fn allow(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn allowed_headers(&self) -> String {
        let mut names: Vec<&str> = CLIENT_HEADERS.to_vec();
        names.extend(self.extra_headers.iter().map(String::as_str));
        names.join(", ")
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The layer: answer preflights, decorate other responses.
pub(crate) async fn layer(
    State(cors): State<Arc<CorsOptions>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let Some(origin) = origin else {
        // Same-origin or not from a browser: nothing to do.
        return next.run(request).await;
    };
    let allowed = origin.to_str().is_ok_and(|o| cors.allows(o));
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);

    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if allowed {
            let headers = response.headers_mut();
            cors.allow(&origin, headers);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            if let Ok(value) = HeaderValue::from_str(&cors.allowed_headers()) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
            }
            if let Some(max_age) = cors.max_age {
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from(max_age.as_secs()),
                );
            }
        }
        response.headers_mut().append(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        response
    } else {
        let mut response = next.run(request).await;
        if allowed {
            cors.allow(&origin, response.headers_mut());
        }
        response
    };
    if !preflight {
        // The answer depends on the Origin: caches must not hand one origin's to another.
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_ignoring_case_and_trailing_slash() {
        let cors = CorsOptions::allow_origins(["https://App.example.com/"]);
        assert!(cors.allows("https://app.example.com"));
        assert!(!cors.allows("http://app.example.com"));
        assert!(!cors.allows("https://app.example.com:8443"));
        assert!(!cors.allows("https://evil.example.com"));
        assert!(CorsOptions::allow_any_origin().allows("null"));
    }
}
