//! Extractors: what a hub method can take as parameters.
//!
//! Every parameter of a hub method implements [`FromInvocation`]. Two kinds exist:
//!
//! - **Arguments**: any `T: DeserializeOwned` takes the next positional argument of the
//!   invocation, deserialized from the protocol it arrived in (JSON or MessagePack). Their
//!   count is what the method "expects"; an invocation with another count is refused before the
//!   method runs.
//! - **Context**: [`Clients`], [`Groups`], [`Context`], [`State`], [`HubContext`] and
//!   [`InvocationId`] come from the connection and the hub and consume no argument.
//!
//! Parameters are extracted left to right, so arguments keep their order whatever context
//! parameters sit between them.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use signalr_protocol::RawValue;
use tokio_util::sync::CancellationToken;

use super::HubCore;
use super::clients::Clients;
use super::context::{Context, Groups, HubContext};
use crate::connection::HubConnection;
use crate::error::Rejection;

/// What an extractor sees of an invocation.
pub struct InvocationParts<'a, S> {
    pub(crate) state: &'a S,
    pub(crate) core: &'a Arc<HubCore>,
    pub(crate) connection: &'a Arc<HubConnection>,
    pub(crate) invocation_id: Option<&'a str>,
    pub(crate) arguments: std::vec::IntoIter<RawValue>,
    /// Position of the next argument, for error messages.
    pub(crate) position: usize,
    /// Upload streams of the invocation, in `streamIds` order.
    pub(crate) uploads: std::vec::IntoIter<super::stream::UploadReceiver>,
    /// Cancelled when the invocation is cancelled or the connection ends.
    pub(crate) cancellation: InvocationCancellation,
}

/// An invocation's cancellation token, or what to make it from when first asked for.
#[derive(Debug)]
pub(crate) enum InvocationCancellation {
    /// The token itself.
    Ready(CancellationToken),
    /// Made on first use as a child of the connection's token: a child token costs two
    /// allocations and a lock on the parent, per invocation, for methods that never ask
    /// (and so does a clone of the parent, kept until then).
    OfConnection,
}

impl<S> InvocationParts<'_, S> {
    /// The invocation's cancellation token, made on first use.
    pub(crate) fn cancellation(&mut self) -> CancellationToken {
        match &self.cancellation {
            InvocationCancellation::Ready(token) => token.clone(),
            InvocationCancellation::OfConnection => {
                let token = self.connection.closed_ref().child_token();
                self.cancellation = InvocationCancellation::Ready(token.clone());
                token
            }
        }
    }

    /// The hub's shared state.
    pub fn state(&self) -> &S {
        self.state
    }

    /// The calling connection.
    pub fn connection(&self) -> &Arc<HubConnection> {
        self.connection
    }

    /// The invocation id (`None` for fire-and-forget invocations and lifecycle hooks).
    pub fn invocation_id(&self) -> Option<&str> {
        self.invocation_id
    }

    /// Take the next positional argument, still encoded.
    pub fn next_argument(&mut self) -> Result<RawValue, Rejection> {
        self.position += 1;
        self.arguments
            .next()
            .ok_or_else(|| Rejection::new(format!("argument {} is missing", self.position)))
    }
}

/// A hub method parameter.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a hub method parameter",
    note = "parameters are either arguments (any `T: serde::de::DeserializeOwned`) or one of the context extractors: Clients, Groups, Context, State<S>, HubContext, InvocationId, Cancellation, UploadStream<T>"
)]
pub trait FromInvocation<S>: Sized {
    /// How many positional invocation arguments this parameter consumes.
    const ARGUMENTS: usize = 0;

    /// How many upload streams (`streamIds`) this parameter consumes.
    const STREAMS: usize = 0;

    /// Build the parameter from the invocation.
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection>;
}

impl<S, T: DeserializeOwned> FromInvocation<S> for T {
    const ARGUMENTS: usize = 1;

    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        let raw = parts.next_argument()?;
        raw.decode::<T>().map_err(|error| {
            Rejection::new(format!(
                "Error binding argument {}: {error}",
                parts.position
            ))
        })
    }
}

/// The hub's shared state (given to `HubBuilder::with_state`), cloned for each invocation.
/// Put an `Arc` inside (or make the state an `Arc`) so the clone is cheap.
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone> FromInvocation<S> for State<S> {
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        Ok(State(parts.state.clone()))
    }
}

/// The id of the current invocation; `None` when the client does not wait for a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationId(pub Option<String>);

impl<S> FromInvocation<S> for InvocationId {
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        Ok(InvocationId(parts.invocation_id.map(str::to_owned)))
    }
}

impl<S> FromInvocation<S> for Clients {
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        Ok(Clients::new(parts.core.clone(), parts.connection.clone()))
    }
}

impl<S> FromInvocation<S> for Groups {
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        Ok(Groups::new(parts.core.clone()))
    }
}

impl<S> FromInvocation<S> for Context {
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        Ok(Context::new(parts.connection.clone()))
    }
}

impl<S> FromInvocation<S> for HubContext {
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        Ok(HubContext::new(parts.core.clone()))
    }
}
