//! The JSON bodies of the negotiate endpoint (`POST {hub}/negotiate`): the successful response,
//! the redirect, and the error.
//!
//! Property names are the camelCase ones the clients read. There is deliberately no way to emit
//! `ProtocolVersion`: every official client takes that property as the mark of the old ASP.NET
//! SignalR server and refuses to connect.

use serde::{Deserialize, Serialize};

use crate::protocol::TransferFormat;

/// A transport, by the case-sensitive name used in the negotiate response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportType {
    /// Full-duplex WebSockets.
    WebSockets,
    /// Server-Sent Events down, HTTP POST up (text only).
    ServerSentEvents,
    /// Long polling down, HTTP POST up.
    LongPolling,
}

impl TransportType {
    /// All transports, in the order clients should prefer them.
    pub const ALL: [TransportType; 3] = [
        TransportType::WebSockets,
        TransportType::ServerSentEvents,
        TransportType::LongPolling,
    ];

    /// The wire name, e.g. `"WebSockets"`.
    pub fn name(self) -> &'static str {
        match self {
            TransportType::WebSockets => "WebSockets",
            TransportType::ServerSentEvents => "ServerSentEvents",
            TransportType::LongPolling => "LongPolling",
        }
    }

    /// The transfer formats this transport can carry.
    pub fn transfer_formats(self) -> Vec<TransferFormat> {
        match self {
            TransportType::ServerSentEvents => vec![TransferFormat::Text],
            TransportType::WebSockets | TransportType::LongPolling => {
                vec![TransferFormat::Text, TransferFormat::Binary]
            }
        }
    }
}

/// One entry of `availableTransports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTransport {
    /// The transport.
    pub transport: TransportType,
    /// The formats it carries on this server.
    pub transfer_formats: Vec<TransferFormat>,
}

impl AvailableTransport {
    /// The entry for `transport` with every format it can carry.
    pub fn new(transport: TransportType) -> AvailableTransport {
        AvailableTransport {
            transport,
            transfer_formats: transport.transfer_formats(),
        }
    }
}

/// A successful negotiate response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateResponse {
    /// 0 or 1; version 1 adds `connectionToken`.
    pub negotiate_version: u32,
    /// The public id of the connection (`Context.ConnectionId`).
    pub connection_id: String,
    /// The secret the client sends as `id=` on every transport request (version 1 only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connection_token: Option<String>,
    /// Transports in the order the client should try them.
    pub available_transports: Vec<AvailableTransport>,
    /// Present (and true) only when the client asked for stateful reconnect and the server
    /// allows it: a client that did not ask aborts when it sees it.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub use_stateful_reconnect: bool,
}

/// A negotiate response sending the client to another server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateRedirect {
    /// The hub URL to negotiate with next.
    pub url: String,
    /// A bearer token that replaces the client's own from then on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_token: Option<String>,
}

/// A negotiate response refusing the connection (sent with HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegotiateError {
    /// The reason, shown by the client.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1() -> NegotiateResponse {
        NegotiateResponse {
            negotiate_version: 1,
            connection_id: "Xq3bd1yTtG2zqK0m9wF2aA".to_owned(),
            connection_token: Some("p0K5f1a8Hn7LQe3VxW2s9g".to_owned()),
            available_transports: TransportType::ALL
                .into_iter()
                .map(AvailableTransport::new)
                .collect(),
            use_stateful_reconnect: false,
        }
    }

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap_or_else(|err| err.to_string())
    }

    #[test]
    fn version_1_response_is_exact() {
        assert_eq!(
            json(&v1()),
            concat!(
                r#"{"negotiateVersion":1,"connectionId":"Xq3bd1yTtG2zqK0m9wF2aA","#,
                r#""connectionToken":"p0K5f1a8Hn7LQe3VxW2s9g","availableTransports":["#,
                r#"{"transport":"WebSockets","transferFormats":["Text","Binary"]},"#,
                r#"{"transport":"ServerSentEvents","transferFormats":["Text"]},"#,
                r#"{"transport":"LongPolling","transferFormats":["Text","Binary"]}]}"#
            )
        );
        assert!(!json(&v1()).contains("ProtocolVersion"));
        assert!(!json(&v1()).contains("useStatefulReconnect"));
    }

    #[test]
    fn stateful_reconnect_only_when_true() {
        let mut response = v1();
        response.use_stateful_reconnect = true;
        let text = json(&response);
        assert!(
            text.ends_with(r#"["Text","Binary"]}],"useStatefulReconnect":true}"#),
            "{text}"
        );
    }

    #[test]
    fn version_0_has_no_token() {
        let response = NegotiateResponse {
            negotiate_version: 0,
            connection_token: None,
            available_transports: vec![AvailableTransport::new(TransportType::LongPolling)],
            ..v1()
        };
        assert_eq!(
            json(&response),
            r#"{"negotiateVersion":0,"connectionId":"Xq3bd1yTtG2zqK0m9wF2aA","availableTransports":[{"transport":"LongPolling","transferFormats":["Text","Binary"]}]}"#
        );
    }

    #[test]
    fn responses_parse_back() {
        let text = json(&v1());
        assert_eq!(
            serde_json::from_str::<NegotiateResponse>(&text).ok(),
            Some(v1())
        );
        let v0: Result<NegotiateResponse, _> = serde_json::from_str(
            r#"{"connectionId":"a","negotiateVersion":0,"availableTransports":[],"extra":1}"#,
        );
        assert_eq!(v0.ok().map(|r| r.connection_token), Some(None));
    }

    #[test]
    fn redirect_and_error_shapes() {
        assert_eq!(
            json(&NegotiateRedirect {
                url: "https://other/hub".to_owned(),
                access_token: Some("t".to_owned())
            }),
            r#"{"url":"https://other/hub","accessToken":"t"}"#
        );
        assert_eq!(
            json(&NegotiateRedirect {
                url: "https://other/hub".to_owned(),
                access_token: None
            }),
            r#"{"url":"https://other/hub"}"#
        );
        assert_eq!(
            json(&NegotiateError {
                error: "nope".to_owned()
            }),
            r#"{"error":"nope"}"#
        );
    }
}
