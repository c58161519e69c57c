//! The Server-Sent Events transport: `GET {path}?id=TOKEN` with `Accept: text/event-stream`
//! is the receive half, a streaming response that lives as long as the connection; sends
//! arrive as `POST {path}?id=TOKEN` (the endpoint's send handler). Text only: the JSON hub
//! protocol (a MessagePack handshake is refused by the application, which sees from
//! [`TransportConnection::supports`](super::TransportConnection::supports) that the transport
//! has no binary format).
//!
//! Framing is exact, because the .NET client's parser is strict: the stream opens with the
//! comment line `:` CRLF (written at once, so clients that wait for bytes fire `open`); then
//! every batch drained from the outbox becomes one event, its bytes split on `\n` (a `\r`
//! before it dropped), each line sent as `data: <line>` CRLF, and the event ended by an empty
//! CRLF line. Nothing else: no `event:`, `id:` or `retry:` fields, no bare LF. A batch holds
//! only whole hub messages, so every event does.
//!
//! The connection ends with the response: when the application closes the outbox (the
//! stream ends after the last event) or when the client goes away (the body is dropped).
//! Either way the connection is disposed, and the application sees its input end. The HTTP
//! connection ends with it (`Connection: close`): the last events of a client that stopped
//! reading can still sit in the kernel's buffers when the response ends, and a keep-alive
//! connection waiting for a next request that never comes would hold them and the socket
//! until [`ServeOptions::request_header_timeout`](crate::ServeOptions::request_header_timeout)
//! (or for good, served by `axum::serve`, which has no idle timeout); no write is pending for
//! [`ServeOptions::write_timeout`](crate::ServeOptions::write_timeout) to time.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};

use super::endpoint::{Endpoint, Refusal};
use super::telemetry::TransportMetrics;
use super::{Batch, Outbox, TransportType};
use crate::auth::Identity;

/// Answer the SSE request: activate the connection, start its application, and stream the
/// outbox as events.
pub(crate) fn connect(
    endpoint: Arc<Endpoint>,
    parts: http::request::Parts,
    identity: Option<Arc<Identity>>,
) -> Result<Response, Refusal> {
    let (entry, _) =
        endpoint.activate_receiver(parts, TransportType::ServerSentEvents, identity)?;

    let stream = EventStream {
        outbox: entry.outbox.clone(),
        metrics: endpoint.lifecycle.metrics.clone(),
        max_event_bytes: endpoint.options.max_write_batch_bytes,
        opened: false,
        _release: Release {
            endpoint: endpoint.clone(),
            token: entry.token.clone(),
        },
    };
    let body = Body::from_stream(futures::stream::unfold(stream, EventStream::next));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache,no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    // Compression would buffer events; intermediaries must pass them through as they come.
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    Ok(response)
}

/// The state of one event stream, owned by the response body.
struct EventStream {
    outbox: Arc<Outbox>,
    metrics: Arc<TransportMetrics>,
    max_event_bytes: usize,
    /// The opening comment has been sent.
    opened: bool,
    /// Disposes of the connection when the body ends or is dropped.
    _release: Release,
}

impl EventStream {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, EventStream)> {
        if !self.opened {
            self.opened = true;
            return Some((Ok(Bytes::from_static(b":\r\n")), self));
        }
        let mut batch = BytesMut::new();
        match self
            .outbox
            .next_counted_batch(&mut batch, self.max_event_bytes)
            .await
        {
            (Batch::Frames, frames) => {
                let event = event(&batch);
                self.metrics
                    .sent(TransportType::ServerSentEvents, event.len(), frames);
                Some((Ok(event), self))
            }
            (Batch::Closed, _) => None,
        }
    }
}

/// One event carrying `data`.
fn event(data: &[u8]) -> Bytes {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut out = BytesMut::with_capacity(data.len() + lines * 8 + 2);
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Disposes of an SSE connection when its response ends, however it ends.
struct Release {
    endpoint: Arc<Endpoint>,
    token: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.endpoint.connections.dispose(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::event;

    #[test]
    fn events_are_data_lines_with_crlf() {
        assert_eq!(
            &event(b"{\"type\":6}\x1e{}\x1e")[..],
            b"data: {\"type\":6}\x1e{}\x1e\r\n\r\n"
        );
        assert_eq!(
            &event(b"a\nb\r\nc")[..],
            b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"
        );
        assert_eq!(&event(b"a\n")[..], b"data: a\r\ndata: \r\n\r\n");
    }
}
