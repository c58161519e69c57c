//! Streaming, both ways.
//!
//! - **Server to client**: a method registered with `HubBuilder::stream` returns a
//!   [`futures::Stream`]; each item becomes a StreamItem message and the end a Completion. The
//!   client cancels with CancelInvocation (or by going away), which the method observes
//!   through the [`Cancellation`] extractor and which stops the stream.
//! - **Client to server**: a parameter of type [`UploadStream<T>`] receives the items the
//!   client streams for one of the invocation's `streamIds`; a method may take several upload
//!   streams and normal arguments together.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::Stream;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use signalr_protocol::{Protocol, RawValue};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::extract::{FromInvocation, InvocationParts};
use crate::error::{HubError, Rejection};

/// One item a streaming method yields.
///
/// Implemented for common value types and for `Result<T, E>` (`T: Serialize`,
/// `E: Into<HubError>`): yield `Ok(item)` for your own types, and an `Err` to end the stream
/// with an error.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a stream item",
    note = "yield plain values such as `String` or numbers, or `Result<T, HubError>` where `T: Serialize`"
)]
pub trait IntoStreamItem {
    /// Encode the item in the caller's protocol, or end the stream with an error.
    fn into_stream_item(self, protocol: Protocol) -> Result<RawValue, HubError>;
}

fn encode<T: Serialize + ?Sized>(value: &T, protocol: Protocol) -> Result<RawValue, HubError> {
    protocol
        .encode_value(value)
        .map_err(|e| HubError::internal(format!("a stream item could not be serialized: {e}")))
}

impl<T: Serialize, E: Into<HubError>> IntoStreamItem for Result<T, E> {
    fn into_stream_item(self, protocol: Protocol) -> Result<RawValue, HubError> {
        match self {
            Ok(value) => encode(&value, protocol),
            Err(error) => Err(error.into()),
        }
    }
}

macro_rules! plain_items {
    ($($ty:ty),*) => {$(
        impl IntoStreamItem for $ty {
            fn into_stream_item(self, protocol: Protocol) -> Result<RawValue, HubError> {
                encode(&self, protocol)
            }
        }
    )*};
}
plain_items!(
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    usize,
    i8,
    i16,
    i32,
    i64,
    isize,
    f32,
    f64,
    String,
    &'static str,
    serde_json::Value
);

impl<T: Serialize> IntoStreamItem for Vec<T> {
    fn into_stream_item(self, protocol: Protocol) -> Result<RawValue, HubError> {
        encode(&self, protocol)
    }
}

impl<T: Serialize> IntoStreamItem for Option<T> {
    fn into_stream_item(self, protocol: Protocol) -> Result<RawValue, HubError> {
        encode(&self, protocol)
    }
}

/// Items of a server-to-client stream, encoded for the caller.
pub(crate) type ItemStream = BoxStream<'static, Result<RawValue, HubError>>;

/// A streaming hub method: an async function of extractors returning a `Stream`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a streaming hub method",
    note = "a streaming method is an `async fn` whose parameters implement `FromInvocation` and which returns a `futures::Stream` of items implementing `IntoStreamItem`"
)]
pub trait StreamHandler<T, S>: Clone + Send + Sync + 'static {
    /// Positional arguments the method expects.
    fn arguments(&self) -> usize;
    /// Upload streams the method expects.
    fn streams(&self) -> usize;
    /// Extract the parameters and start the method.
    fn call(
        &self,
        parts: InvocationParts<'_, S>,
    ) -> Result<Pin<Box<dyn Future<Output = ItemStream> + Send>>, Rejection>;
}

macro_rules! stream_handler_impl {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, Fut, St, S, $($ty,)*> StreamHandler<($($ty,)*), S> for F
        where
            F: Fn($($ty),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = St> + Send + 'static,
            St: Stream + Send + 'static,
            St::Item: IntoStreamItem,
            S: Send + Sync + 'static,
            $($ty: FromInvocation<S> + Send,)*
        {
            fn arguments(&self) -> usize {
                0 $(+ <$ty as FromInvocation<S>>::ARGUMENTS)*
            }

            fn streams(&self) -> usize {
                0 $(+ <$ty as FromInvocation<S>>::STREAMS)*
            }

            fn call(
                &self,
                mut parts: InvocationParts<'_, S>,
            ) -> Result<Pin<Box<dyn Future<Output = ItemStream> + Send>>, Rejection> {
                $(let $ty = $ty::from_invocation(&mut parts)?;)*
                let protocol = parts.connection.protocol();
                let future = (self)($($ty),*);
                Ok(Box::pin(async move {
                    let stream = future.await;
                    stream.map(move |item| item.into_stream_item(protocol)).boxed()
                }))
            }
        }
    };
}

stream_handler_impl!();
stream_handler_impl!(T1);
stream_handler_impl!(T1, T2);
stream_handler_impl!(T1, T2, T3);
stream_handler_impl!(T1, T2, T3, T4);
stream_handler_impl!(T1, T2, T3, T4, T5);
stream_handler_impl!(T1, T2, T3, T4, T5, T6);
stream_handler_impl!(T1, T2, T3, T4, T5, T6, T7);
stream_handler_impl!(T1, T2, T3, T4, T5, T6, T7, T8);

/// A streaming handler with its signature erased.
pub(crate) trait ErasedStreamHandler<S>: Send + Sync {
    fn arguments(&self) -> usize;
    fn streams(&self) -> usize;
    fn call(
        &self,
        parts: InvocationParts<'_, S>,
    ) -> Result<Pin<Box<dyn Future<Output = ItemStream> + Send>>, Rejection>;
}

struct Erased<H, T> {
    handler: H,
    _signature: PhantomData<fn() -> T>,
}

impl<H, T, S> ErasedStreamHandler<S> for Erased<H, T>
where
    H: StreamHandler<T, S>,
    T: 'static,
{
    fn arguments(&self) -> usize {
        self.handler.arguments()
    }

    fn streams(&self) -> usize {
        self.handler.streams()
    }

    fn call(
        &self,
        parts: InvocationParts<'_, S>,
    ) -> Result<Pin<Box<dyn Future<Output = ItemStream> + Send>>, Rejection> {
        self.handler.call(parts)
    }
}

pub(crate) type BoxedStreamHandler<S> = Arc<dyn ErasedStreamHandler<S>>;

pub(crate) fn boxed<H, T, S>(handler: H) -> BoxedStreamHandler<S>
where
    H: StreamHandler<T, S>,
    T: 'static,
    S: 'static,
{
    Arc::new(Erased {
        handler,
        _signature: PhantomData,
    })
}

/// What the connection forwards to an upload stream: an item, or the client's error.
pub(crate) type UploadItem = Result<RawValue, String>;

/// The receiving half of one upload stream, prepared by the connection when the invocation
/// arrives (items may come before the method starts).
pub(crate) type UploadReceiver = mpsc::Receiver<UploadItem>;

/// A stream the client uploads to a hub method (`connection.send("Method", subject)` with a
/// `Subject` in JS). Yields `Ok(item)` for each item the client sends and ends when the client
/// completes the stream; an `Err` carries the client's error (or an item that could not be
/// read as `T`) and is the last item.
///
/// ```
/// use futures::StreamExt;
/// use signalr_server::hub::UploadStream;
///
/// async fn sum(mut numbers: UploadStream<i64>) -> Result<i64, signalr_server::HubError> {
///     let mut total = 0;
///     while let Some(number) = numbers.next().await {
///         total += number?;
///     }
///     Ok(total)
/// }
/// # let _ = sum;
/// ```
pub struct UploadStream<T> {
    receiver: UploadReceiver,
    done: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for UploadStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Stream for UploadStream<T> {
    type Item = Result<T, HubError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.receiver.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(raw))) => Poll::Ready(Some(raw.decode::<T>().map_err(|e| {
                this.done = true;
                HubError::new(format!("A stream item could not be read: {e}"))
            }))),
            Poll::Ready(Some(Err(error))) => {
                this.done = true;
                Poll::Ready(Some(Err(HubError::new(error))))
            }
        }
    }
}

impl<S, T: DeserializeOwned + Send> FromInvocation<S> for UploadStream<T> {
    const STREAMS: usize = 1;

    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        let receiver = parts
            .uploads
            .next()
            .ok_or_else(|| Rejection::new("an upload stream is missing"))?;
        Ok(UploadStream {
            receiver,
            done: false,
            _item: PhantomData,
        })
    }
}

/// Cancellation of the current invocation: cancelled when the client cancels a stream
/// (CancelInvocation) or the connection ends. Long-running methods select on it.
#[derive(Debug, Clone)]
pub struct Cancellation(pub CancellationToken);

impl Cancellation {
    /// Completes when the invocation is cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }

    /// Whether the invocation is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

impl<S> FromInvocation<S> for Cancellation {
    fn from_invocation(parts: &mut InvocationParts<'_, S>) -> Result<Self, Rejection> {
        Ok(Cancellation(parts.cancellation()))
    }
}
