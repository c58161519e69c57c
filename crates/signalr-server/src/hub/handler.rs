//! Hub method handlers: async functions whose parameters are extractors.
//!
//! [`Handler`] is implemented for every `async fn` (or closure returning a future) of up to
//! 12 parameters that all implement [`FromInvocation`], returning anything that implements
//! [`IntoHubResult`]. Handlers are erased into [`BoxedHandler`] so a hub can keep methods of
//! different signatures in one table.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use signalr_protocol::{Protocol, RawValue};

use super::extract::{FromInvocation, InvocationParts};
use crate::error::{HubError, Rejection};

/// What a hub method produced: `None` for a method without a return value.
pub(crate) type MethodOutput = Result<Option<RawValue>, HubError>;

/// A hub method return type.
///
/// Implemented for `()` (no result), common value types, and `Result<T, E>` for any
/// `T: Serialize` and `E: Into<HubError>`; return `Result<MyStruct, HubError>` (or use `?`)
/// for your own serializable types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a hub method",
    note = "return `()`, a plain value such as `String`, or `Result<T, HubError>` where `T: Serialize`"
)]
pub trait IntoHubResult {
    /// Encode the result in the caller's protocol.
    fn into_hub_result(self, protocol: Protocol) -> MethodOutput;
}

fn encode<T: Serialize + 'static>(value: &T, protocol: Protocol) -> MethodOutput {
    if TypeId::of::<T>() == TypeId::of::<()>() {
        return Ok(None);
    }
    protocol
        .encode_value(value)
        .map(Some)
        .map_err(|e| HubError::internal(format!("the result could not be serialized: {e}")))
}

impl<T: Serialize + 'static, E: Into<HubError>> IntoHubResult for Result<T, E> {
    fn into_hub_result(self, protocol: Protocol) -> MethodOutput {
        match self {
            Ok(value) => encode(&value, protocol),
            Err(error) => Err(error.into()),
        }
    }
}

macro_rules! plain_results {
    ($($ty:ty),*) => {$(
        impl IntoHubResult for $ty {
            fn into_hub_result(self, protocol: Protocol) -> MethodOutput {
                encode(&self, protocol)
            }
        }
    )*};
}
plain_results!(
    (),
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

impl<T: Serialize + 'static> IntoHubResult for Vec<T> {
    fn into_hub_result(self, protocol: Protocol) -> MethodOutput {
        encode(&self, protocol)
    }
}

impl<T: Serialize + 'static> IntoHubResult for Option<T> {
    fn into_hub_result(self, protocol: Protocol) -> MethodOutput {
        encode(&self, protocol)
    }
}

impl<K: Serialize + 'static, V: Serialize + 'static> IntoHubResult for HashMap<K, V> {
    fn into_hub_result(self, protocol: Protocol) -> MethodOutput {
        encode(&self, protocol)
    }
}

impl<K: Serialize + 'static, V: Serialize + 'static> IntoHubResult for BTreeMap<K, V> {
    fn into_hub_result(self, protocol: Protocol) -> MethodOutput {
        encode(&self, protocol)
    }
}

/// A hub method: an async function of extractors. `T` is the tuple of its parameter types
/// (it only exists to keep the implementations for different arities apart).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a hub method handler",
    note = "a handler is an `async fn` whose parameters implement `FromInvocation` and whose return type implements `IntoHubResult`"
)]
pub trait Handler<T, S>: Clone + Send + Sync + 'static {
    /// Number of positional arguments the method expects.
    fn arguments(&self) -> usize;

    /// Number of upload streams the method expects.
    fn streams(&self) -> usize;

    /// Extract the parameters and start the method.
    fn call(
        &self,
        parts: InvocationParts<'_, S>,
    ) -> Result<BoxFuture<'static, MethodOutput>, Rejection>;
}

macro_rules! handler_impl {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, Fut, R, S, $($ty,)*> Handler<($($ty,)*), S> for F
        where
            F: Fn($($ty),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoHubResult,
            S: Send + Sync + 'static,
            $($ty: FromInvocation<S> + Send,)*
        {
            fn arguments(&self) -> usize {
                0 $(+ <$ty as FromInvocation<S>>::ARGUMENTS)*
            }

            fn streams(&self) -> usize {
                0 $(+ <$ty as FromInvocation<S>>::STREAMS)*
            }

            fn call(&self, mut parts: InvocationParts<'_, S>) -> Result<BoxFuture<'static, MethodOutput>, Rejection> {
                $(let $ty = $ty::from_invocation(&mut parts)?;)*
                let protocol = parts.connection.protocol();
                let future = (self)($($ty),*);
                Ok(Box::pin(async move { future.await.into_hub_result(protocol) }))
            }
        }
    };
}

handler_impl!();
handler_impl!(T1);
handler_impl!(T1, T2);
handler_impl!(T1, T2, T3);
handler_impl!(T1, T2, T3, T4);
handler_impl!(T1, T2, T3, T4, T5);
handler_impl!(T1, T2, T3, T4, T5, T6);
handler_impl!(T1, T2, T3, T4, T5, T6, T7);
handler_impl!(T1, T2, T3, T4, T5, T6, T7, T8);
handler_impl!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
handler_impl!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
handler_impl!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
handler_impl!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);

/// A handler with its signature erased.
pub(crate) trait ErasedHandler<S>: Send + Sync {
    fn arguments(&self) -> usize;
    fn streams(&self) -> usize;
    fn call(
        &self,
        parts: InvocationParts<'_, S>,
    ) -> Result<BoxFuture<'static, MethodOutput>, Rejection>;
}

struct Erased<H, T> {
    handler: H,
    _signature: PhantomData<fn() -> T>,
}

impl<H, T, S> ErasedHandler<S> for Erased<H, T>
where
    H: Handler<T, S>,
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
    ) -> Result<BoxFuture<'static, MethodOutput>, Rejection> {
        self.handler.call(parts)
    }
}

/// A stored hub method.
pub(crate) type BoxedHandler<S> = Arc<dyn ErasedHandler<S>>;

pub(crate) fn boxed<H, T, S>(handler: H) -> BoxedHandler<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: 'static,
{
    Arc::new(Erased {
        handler,
        _signature: PhantomData,
    })
}
