//! The long-polling transport: `GET {path}?id=TOKEN` polls are the receive half, `POST`s the
//! send half (the endpoint's send handler), `DELETE` ends the connection. It mirrors ASP.NET
//! Core's `LongPollingServerTransport` (protocol.md §3.3):
//!
//! - The **first poll** starts the application and is answered at once, `200` and empty:
//!   clients complete their transport start with it.
//! - A **later poll** waits up to the poll timeout for the outbox: `200`
//!   `application/octet-stream` with everything queued; `200` empty at the timeout (the
//!   client polls again); `204` once the application has closed the outbox and everything
//!   was sent ("the connection is over"), which also disposes of it.
//! - A **new poll while one is outstanding** ends the old one with `204` at once and is
//!   served after it; polls of one connection never drain the outbox concurrently.
//! - **DELETE** answers `202` and disposes of the connection (an outstanding poll gets `204`,
//!   later requests `404`).
//!
//! The outbox is the buffer between polls: frames queue there while no poll is outstanding
//! and the next poll takes them all, in order, whole (it only holds whole frames). A client
//! between polls is subject to the same slow-consumer bound as any other; only a backlog
//! beyond [`TransportOptions::max_buffered_bytes`](super::TransportOptions::max_buffered_bytes)
//! closes it. A connection without a poll for the disconnect timeout is disposed by the
//! endpoint's housekeeping. Long polling has its own liveness, so the hub sends no pings on
//! it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;

use super::connections::Entry;
use super::endpoint::{Endpoint, Refusal};
use super::{Batch, TransportType};
use crate::auth::Identity;

/// `GET {path}?id=TOKEN` (not an upgrade, not an event stream).
pub(crate) async fn poll(
    endpoint: Arc<Endpoint>,
    parts: http::request::Parts,
    identity: Option<Arc<Identity>>,
) -> Result<Response, Refusal> {
    let (entry, started) =
        endpoint.activate_receiver(parts, TransportType::LongPolling, identity)?;
    if started {
        // The first poll only starts the connection, and is answered at once.
        entry.deactivate();
        return Ok(StatusCode::OK.into_response());
    }

    let (number, ended) = entry.begin_poll().ok_or(Refusal::UnknownId)?;
    // Dropped however this poll ends, also when the client abandons the request.
    let _end = PollEnd {
        entry: &entry,
        number,
    };
    // The poll this one replaced (if any) was told to end; wait until it has.
    let _serial = entry.polls.lock().await;
    let mut batch = BytesMut::new();
    let response = tokio::select! {
        // First: a replaced poll must give way even when frames are waiting, so they go to
        // the newer poll instead.
        biased;
        () = ended.cancelled() => StatusCode::NO_CONTENT.into_response(),
        next = entry.outbox.next_counted_batch(&mut batch, usize::MAX) => match next {
            (Batch::Frames, frames) => {
                endpoint
                    .lifecycle
                    .metrics
                    .sent(TransportType::LongPolling, batch.len(), frames);
                let mut response = Response::new(Body::from(batch.freeze()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            (Batch::Closed, _) => {
                endpoint.connections.dispose(&entry.token);
                StatusCode::NO_CONTENT.into_response()
            }
        },
        () = tokio::time::sleep(endpoint.options.poll_timeout) => StatusCode::OK.into_response(),
    };
    Ok(response)
}

/// `DELETE {path}?id=TOKEN`: the client stops; long polling only.
pub(crate) fn delete(
    endpoint: &Endpoint,
    parts: &http::request::Parts,
) -> Result<Response, Refusal> {
    let entry = endpoint.lookup(parts)?;
    if entry.transport() != Some(TransportType::LongPolling) {
        return Err(Refusal::NotLongPolling);
    }
    endpoint.connections.dispose(&entry.token);
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Marks the connection inactive when a poll ends, unless a newer poll took over.
struct PollEnd<'a> {
    entry: &'a Entry,
    number: u64,
}

impl Drop for PollEnd<'_> {
    fn drop(&mut self) {
        self.entry.end_poll(self.number);
    }
}
