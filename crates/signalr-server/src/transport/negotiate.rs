//! `POST {path}/negotiate`: create a logical connection and tell the client how to reach it.
//!
//! Version selection follows ASP.NET Core: no `negotiateVersion` means version 0 (the
//! connection id doubles as the token); anything above 1 is answered with 1, the newest
//! version there is. Errors are answered the way the clients surface them best: HTTP 200
//! with `{"error": "..."}`, which the JS client reports verbatim.
//!
//! Negotiate is authenticated like every request of the endpoint (`401`/`403` fail the
//! client's start), lists exactly the transports the endpoint offers, and answers `503` once
//! the hub is shutting down or when the hub's connection limits are reached (see
//! `admission`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use signalr_protocol::{AvailableTransport, NegotiateError, NegotiateResponse, TransportType};

use super::TransferFormat;
use super::connections::new_id;
use super::endpoint::{Endpoint, Refusal, plain, query_param};

pub(crate) async fn handle(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    if request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "Negotiate requires POST.");
    }
    endpoint.ensure_housekeeping();
    let (parts, _body) = request.into_parts();
    if let Err(refusal) = endpoint.authenticate(&parts).await {
        return refusal.into_response();
    }
    if endpoint.lifecycle.is_shutting_down() {
        return Refusal::ShuttingDown.into_response();
    }
    let version = match query_param(&parts.uri, "negotiateVersion") {
        None => 0,
        Some(raw) => match raw.parse::<i64>() {
            Ok(v) if v < 0 => {
                return json(&NegotiateError {
                    error: format!(
                        "The client requested version '{v}', but the server does not support this version."
                    ),
                });
            }
            Ok(v) => v.min(1) as u32,
            Err(_) => {
                return json(&NegotiateError {
                    error: "The client requested a non-integer protocol version.".to_owned(),
                });
            }
        },
    };

    // A place among the hub's connections, held by the table entry until a transport
    // request starts the connection or the entry is disposed.
    let ticket = match endpoint.lifecycle.admission.negotiation() {
        Ok(ticket) => ticket,
        Err((limit, max)) => {
            tracing::debug!(?limit, max, "negotiate refused by a limit");
            return Refusal::Limit(limit, max).into_response();
        }
    };

    let connection_id: Arc<str> = new_id().into();
    let token = if version == 0 {
        connection_id.to_string()
    } else {
        new_id()
    };
    // Offered only when asked for: the JS client aborts if the server offers it unasked.
    let stateful = endpoint.options.allow_stateful_reconnect
        && query_param(&parts.uri, "useStatefulReconnect")
            .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    endpoint.connections.insert_negotiated(
        token.clone(),
        connection_id.clone(),
        endpoint.options.max_buffered_bytes,
        stateful,
        Some(ticket),
    );

    let response = NegotiateResponse {
        negotiate_version: version,
        connection_id: connection_id.to_string(),
        connection_token: (version > 0).then_some(token),
        available_transports: endpoint
            .options
            .transports
            .iter()
            .map(|&transport| AvailableTransport {
                transport,
                transfer_formats: transfer_formats(transport),
            })
            .collect(),
        use_stateful_reconnect: stateful,
    };
    json(&response)
}

fn transfer_formats(transport: TransportType) -> Vec<TransferFormat> {
    match transport {
        TransportType::ServerSentEvents => vec![TransferFormat::Text],
        TransportType::WebSockets | TransportType::LongPolling => {
            vec![TransferFormat::Text, TransferFormat::Binary]
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-cache, no-store")
            .body(Body::from(body))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "negotiate failed")),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "negotiate failed"),
    }
}
