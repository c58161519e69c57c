//! What every endpoint of one hub shares: its counts and limits, its metrics, and
//! what it takes to shut down gracefully.
//!
//! A hub may be mounted at several paths; each mount is an endpoint with its own connection
//! table. The [`Lifecycle`] ties them together: the [`Admission`] counts that bound the
//! hub's connections on this node, the transport metrics, the shutdown signal every
//! application gets in its [`TransportConnection`](super::TransportConnection), the tracker
//! of the running applications, and the endpoints whose connections must be let go.
//!
//! Shutting down, in order:
//!
//! 1. New connections are refused (negotiate and first transport requests answer `503`);
//!    requests of running connections still work, so a long-polling client can fetch its
//!    goodbye.
//! 2. The signal fires: each application sends its goodbye (the hub sends a Close message
//!    with `allowReconnect`) and closes its outbox, so WebSockets and SSE streams end once it
//!    is written, and long-polling clients receive it with their next poll.
//! 3. Wait, bounded, until every application has finished and every connection has been
//!    released by its transport.
//! 4. Dispose of whatever is left: outstanding long polls answer `204`, streams end.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::TransportOptions;
use super::admission::Admission;
use super::endpoint::Endpoint;
use super::telemetry::TransportMetrics;

/// How often shutdown looks at the connection tables while it waits for them to empty.
const DRAIN_CHECK: Duration = Duration::from_millis(10);

/// State shared by the endpoints of one hub.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    /// Connections and pending negotiations of the hub on this node, and their bounds.
    pub(crate) admission: Arc<Admission>,
    /// What the hub's transports count.
    pub(crate) metrics: Arc<TransportMetrics>,
    /// Cancelled when shutdown begins; applications get a clone.
    shutdown: CancellationToken,
    /// The running applications, so shutdown can wait for them.
    applications: TaskTracker,
    /// Endpoints created by `Hub::router`; weak so that a dropped router is not kept alive.
    endpoints: Mutex<Vec<Weak<Endpoint>>>,
}

impl Lifecycle {
    /// The shared state of hub `name`, with the admission limits of `options`.
    pub(crate) fn new(name: &str, options: &TransportOptions) -> Lifecycle {
        let metrics = Arc::new(TransportMetrics::new(name));
        Lifecycle {
            admission: Arc::new(Admission::new(
                options.max_connections,
                options.max_pending_negotiations,
                metrics.clone(),
            )),
            metrics,
            shutdown: CancellationToken::new(),
            applications: TaskTracker::new(),
            endpoints: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn register(&self, endpoint: &Arc<Endpoint>) {
        let mut endpoints = self.lock();
        endpoints.retain(|e| e.strong_count() > 0);
        endpoints.push(Arc::downgrade(endpoint));
    }

    /// Whether shutdown has begun (new connections are refused).
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The signal handed to each application.
    pub(crate) fn signal(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Run an application as a tracked task.
    pub(crate) fn spawn(&self, application: BoxFuture<'static, ()>) {
        self.applications.spawn(application);
    }

    /// Shut down every endpoint: see the module documentation. Returns once every
    /// connection is gone, or `timeout` has passed and the rest were dropped. Calling it
    /// again waits the same way.
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        self.shutdown.cancel();
        self.applications.close();
        let endpoints: Vec<Arc<Endpoint>> = self.lock().iter().filter_map(Weak::upgrade).collect();
        for endpoint in &endpoints {
            endpoint.connections.dispose_unstarted();
        }

        let drained = async {
            self.applications.wait().await;
            // Applications are done; their transports are still delivering the goodbye.
            while endpoints.iter().any(|e| e.connections.len() > 0) {
                tokio::time::sleep(DRAIN_CHECK).await;
            }
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::info!(
                ?timeout,
                "shutdown: connections still open after the timeout are dropped"
            );
        }
        let dropped: usize = endpoints.iter().map(|e| e.connections.dispose_all()).sum();
        if dropped > 0 {
            tracing::debug!(dropped, "shutdown: connections dropped");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Endpoint>>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
