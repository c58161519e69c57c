//! Hubs: named methods clients invoke, and the handles to reach clients.
//!
//! A hub is built once with [`Hub::builder`], then mounted as routes (`Hub::router`) and
//! reached from outside through [`HubContext`]. This module deals in invocations and never in
//! HTTP: it does not import axum.

pub(crate) mod clients;
pub(crate) mod context;
pub(crate) mod extract;
pub(crate) mod handler;
pub(crate) mod stream;
pub(crate) mod telemetry;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::lifetime::{HubLifetimeManager, MemoryLifetimeManager};
use crate::options::HubOptions;
use crate::transport::lifecycle::Lifecycle;
use crate::transport::{ConnectionApp, TransportOptions};
pub use clients::{ClientProxy, Clients, HubClients, SingleClientProxy};
pub use context::{Context, Groups, HubContext};
pub use extract::{FromInvocation, InvocationId, InvocationParts, State};
use handler::BoxedHandler;
pub use handler::{Handler, IntoHubResult};
pub use stream::{Cancellation, IntoStreamItem, StreamHandler, UploadStream};

/// Computes a connection's user identifier from the request that opened it.
pub type UserIdProvider = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// What every handle on a hub shares: the lifetime manager and the options.
pub(crate) struct HubCore {
    pub(crate) manager: Arc<dyn HubLifetimeManager>,
    pub(crate) options: HubOptions,
    pub(crate) user_id_provider: Option<UserIdProvider>,
    /// Unacknowledged bytes held for replay per stateful connection (from the transport
    /// options, where stateful reconnect is switched on).
    pub(crate) stateful_reconnect_buffer_size: usize,
    /// What the hub layer counts, registered once for the hub.
    pub(crate) metrics: telemetry::HubMetrics,
}

/// A hub's methods and hooks, with its state type.
pub(crate) struct HubInner<S> {
    pub(crate) core: Arc<HubCore>,
    pub(crate) state: S,
    /// Methods by lower-cased name: clients invoke them case-insensitively, as in ASP.NET Core.
    pub(crate) methods: HashMap<String, Method<S>>,
    pub(crate) on_connected: Option<BoxedHandler<S>>,
    pub(crate) on_disconnected: Option<BoxedHandler<S>>,
}

pub(crate) struct Method<S> {
    /// The name as registered, for error messages (shared: every invocation holds it).
    pub(crate) name: Arc<str>,
    pub(crate) kind: MethodKind<S>,
    /// Who may invoke it; `None`: everyone who may use the hub.
    pub(crate) policy: Option<MethodPolicy>,
}

/// Decides whether the caller may invoke a method.
pub type MethodPolicy = Arc<dyn Fn(&Context) -> bool + Send + Sync>;

/// Whether a method returns one result or a stream of items.
pub(crate) enum MethodKind<S> {
    Invoke(BoxedHandler<S>),
    Stream(stream::BoxedStreamHandler<S>),
}

/// A built hub: mount it with `Hub::router` and reach its clients with [`Hub::context`].
///
/// Cloning is cheap; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    pub(crate) core: Arc<HubCore>,
    pub(crate) app: Arc<dyn ConnectionApp>,
    pub(crate) transport_options: TransportOptions,
    /// Shutdown state shared by every endpoint this hub is mounted as.
    pub(crate) lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("options", &self.core.options)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Start building a hub without shared state.
    pub fn builder() -> HubBuilder<()> {
        HubBuilder {
            state: (),
            methods: HashMap::new(),
            on_connected: None,
            on_disconnected: None,
            options: HubOptions::default(),
            transport_options: TransportOptions::default(),
            manager: None,
            user_id_provider: None,
        }
    }

    /// Send to the hub's clients and manage its groups from outside hub methods.
    pub fn context(&self) -> HubContext {
        HubContext::new(self.core.clone())
    }

    /// The hub's options.
    pub fn options(&self) -> &HubOptions {
        &self.core.options
    }

    /// The hub's name ([`HubOptions::name`]).
    pub fn name(&self) -> &str {
        &self.core.options.name
    }
}

/// Builds a [`Hub`]. `S` is the shared state handed to methods through [`State`].
pub struct HubBuilder<S> {
    state: S,
    methods: HashMap<String, Method<S>>,
    on_connected: Option<BoxedHandler<S>>,
    on_disconnected: Option<BoxedHandler<S>>,
    options: HubOptions,
    transport_options: TransportOptions,
    manager: Option<Arc<dyn HubLifetimeManager>>,
    user_id_provider: Option<UserIdProvider>,
}

impl<S> fmt::Debug for HubBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<&str> = self.methods.values().map(|m| &*m.name).collect();
        methods.sort_unstable();
        f.debug_struct("HubBuilder")
            .field("methods", &methods)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HubBuilder<()> {
    /// Give the hub shared state, handed to methods through the [`State`] extractor. Call it
    /// before registering methods that use it.
    pub fn with_state<S: Clone + Send + Sync + 'static>(self, state: S) -> HubBuilder<S> {
        assert!(
            self.methods.is_empty()
                && self.on_connected.is_none()
                && self.on_disconnected.is_none(),
            "HubBuilder::with_state must be called before methods are registered"
        );
        HubBuilder {
            state,
            methods: HashMap::new(),
            on_connected: None,
            on_disconnected: None,
            options: self.options,
            transport_options: self.transport_options,
            manager: self.manager,
            user_id_provider: self.user_id_provider,
        }
    }
}

impl<S: Send + Sync + 'static> HubBuilder<S> {
    /// Register a method clients can invoke by `name` (matched case-insensitively).
    ///
    /// # Panics
    /// If a method with the same name (ignoring case) is already registered: SignalR has no
    /// overloads.
    pub fn method<H, T>(self, name: &str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.register(name, MethodKind::Invoke(handler::boxed(handler)))
    }

    /// Register a streaming method: it returns a `futures::Stream` whose items are sent to
    /// the caller as they come (the client calls it with `connection.stream(name, ...)`).
    ///
    /// ```
    /// use futures::{Stream, StreamExt};
    /// use signalr_server::Hub;
    ///
    /// async fn counter(count: u32, delay_ms: u64) -> impl Stream<Item = u32> {
    ///     futures::stream::iter(0..count).then(move |i| async move {
    ///         tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
    ///         i
    ///     })
    /// }
    ///
    /// let hub = Hub::builder().stream("Counter", counter).build();
    /// # let _ = hub;
    /// ```
    ///
    /// # Panics
    /// If a method with the same name (ignoring case) is already registered.
    pub fn stream<H, T>(self, name: &str, handler: H) -> Self
    where
        H: stream::StreamHandler<T, S>,
        T: 'static,
    {
        self.register(name, MethodKind::Stream(stream::boxed(handler)))
    }

    fn register(mut self, name: &str, kind: MethodKind<S>) -> Self {
        let key = name.to_ascii_lowercase();
        assert!(
            !self.methods.contains_key(&key),
            "hub method '{name}' is registered twice (names are case-insensitive)"
        );
        self.methods.insert(
            key,
            Method {
                name: name.into(),
                kind,
                policy: None,
            },
        );
        self
    }

    /// Let only callers for which `policy` returns true invoke the method `name` (ASP.NET
    /// Core's `[Authorize(...)]` on a hub method). Others get a Completion error, `Failed to
    /// invoke 'Name' because user is unauthorized`, and the method does not run. The policy
    /// sees the caller's [`Context`]: its identity and claims, user id, request.
    ///
    /// ```
    /// use signalr_server::{Clients, Hub, HubError};
    ///
    /// async fn kick(clients: Clients, connection_id: String) -> Result<(), HubError> {
    ///     clients.client(connection_id).send("kicked", ()).await
    /// }
    ///
    /// let hub = Hub::builder()
    ///     .method("Kick", kick)
    ///     .authorize_method("Kick", |ctx| {
    ///         ctx.identity().is_some_and(|identity| identity.has_claim("role", "admin"))
    ///     })
    ///     .build();
    /// # let _ = hub;
    /// ```
    ///
    /// # Panics
    /// If no method `name` is registered (yet).
    pub fn authorize_method(
        mut self,
        name: &str,
        policy: impl Fn(&Context) -> bool + Send + Sync + 'static,
    ) -> Self {
        let method = self
            .methods
            .get_mut(&name.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("authorize_method: no hub method '{name}' is registered"));
        method.policy = Some(Arc::new(policy));
        self
    }

    /// Run `handler` when a connection has completed its handshake, before it can invoke
    /// anything. If it fails, the connection is closed with the error.
    ///
    /// # Panics
    /// If the handler takes invocation arguments (hooks have none).
    pub fn on_connected<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        assert_eq!(
            handler.arguments(),
            0,
            "on_connected takes no invocation arguments"
        );
        self.on_connected = Some(handler::boxed(handler));
        self
    }

    /// Run `handler` after a connection ended, while it is still in its groups.
    ///
    /// # Panics
    /// If the handler takes invocation arguments (hooks have none).
    pub fn on_disconnected<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        assert_eq!(
            handler.arguments(),
            0,
            "on_disconnected takes no invocation arguments"
        );
        self.on_disconnected = Some(handler::boxed(handler));
        self
    }

    /// Name the hub, for its metrics (the `hub` label) and the health report
    /// ([`HubOptions::name`]; default `"hub"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.options.name = name.into();
        self
    }

    /// Hub settings (timeouts, message size, protocols, errors).
    pub fn options(mut self, options: HubOptions) -> Self {
        self.options = options;
        self
    }

    /// Change hub settings in place.
    pub fn configure(mut self, f: impl FnOnce(&mut HubOptions)) -> Self {
        f(&mut self.options);
        self
    }

    /// Transport settings (transports offered, buffers, slow-consumer bound).
    pub fn transport_options(mut self, options: TransportOptions) -> Self {
        self.transport_options = options;
        self
    }

    /// Change transport settings in place.
    pub fn configure_transports(mut self, f: impl FnOnce(&mut TransportOptions)) -> Self {
        f(&mut self.transport_options);
        self
    }

    /// Use a lifetime manager (a backplane) instead of the in-memory default.
    pub fn lifetime_manager(mut self, manager: Arc<dyn HubLifetimeManager>) -> Self {
        self.manager = Some(manager);
        self
    }

    /// Compute each connection's user identifier (for `Clients.user`) from its request.
    ///
    /// ```
    /// use signalr_server::Hub;
    ///
    /// // Demo identity from the `user` query parameter; real apps read an authenticated claim.
    /// let hub = Hub::builder()
    ///     .user_id_provider(|request| {
    ///         request.uri.query()?.split('&').find_map(|pair| {
    ///             pair.strip_prefix("user=").map(str::to_owned)
    ///         })
    ///     })
    ///     .build();
    /// # let _ = hub;
    /// ```
    pub fn user_id_provider(
        mut self,
        provider: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.user_id_provider = Some(Arc::new(provider));
        self
    }

    /// Finish the hub.
    ///
    /// # Panics
    /// If the options are unusable (no protocol, zero parallel invocations, no transport, a
    /// zero handshake timeout, keep-alive interval or client timeout).
    pub fn build(self) -> Hub {
        // A zero keep-alive interval would re-arm an already expired timer after every ping:
        // each connection would ping in a busy loop. A zero timeout would fail every client.
        for (name, value) in [
            ("handshake_timeout", self.options.handshake_timeout),
            ("keep_alive_interval", self.options.keep_alive_interval),
            ("client_timeout", self.options.client_timeout),
        ] {
            assert!(!value.is_zero(), "{name} must be greater than zero");
        }
        assert!(
            !self.options.protocols.is_empty(),
            "a hub needs at least one protocol"
        );
        assert!(
            self.options.max_parallel_invocations > 0,
            "max_parallel_invocations must be at least 1"
        );
        assert!(
            !self.transport_options.transports.is_empty(),
            "a hub needs at least one transport"
        );
        // Metric handles are registered here, once per hub: a recorder installed later
        // never sees them.
        let lifecycle = Arc::new(Lifecycle::new(&self.options.name, &self.transport_options));
        let core = Arc::new(HubCore {
            manager: self
                .manager
                .unwrap_or_else(|| Arc::new(MemoryLifetimeManager::new())),
            metrics: telemetry::HubMetrics::new(&self.options.name),
            options: self.options,
            user_id_provider: self.user_id_provider,
            stateful_reconnect_buffer_size: self.transport_options.stateful_reconnect_buffer_size,
        });
        let inner = Arc::new(HubInner {
            core: core.clone(),
            state: self.state,
            methods: self.methods,
            on_connected: self.on_connected,
            on_disconnected: self.on_disconnected,
        });
        Hub {
            core,
            app: inner,
            transport_options: self.transport_options,
            lifecycle,
        }
    }
}
