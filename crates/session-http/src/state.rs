//! The state every handler reaches, and how a caller builds it.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use session_core::SessionService;

use crate::health::StoreProbe;
use crate::metrics::Metrics;
use crate::{ApiKeys, EventFeed, ForwardAuth, StoreMetrics};

/// What every handler can reach: the service, the API keys, the
/// forward-auth settings and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<StateInner>,
}

struct StateInner {
    service: SessionService,
    api_keys: ApiKeys,
    forward_auth: ForwardAuth,
    metrics: Metrics,
    readiness_timeout: Duration,
    store_probe: StoreProbe,
    events: Option<EventFeed>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("api_keys", &self.inner.api_keys)
            .field("forward_auth", &self.inner.forward_auth)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// Settings for the API over `service`, whose cache need not be warm
    /// yet: until it is, resolves answer 503 `not_ready` and `/readyz` says
    /// so.
    pub fn builder(service: SessionService) -> ApiStateBuilder {
        ApiStateBuilder {
            service,
            api_keys: ApiKeys::none(),
            forward_auth: ForwardAuth::default(),
            store_metrics: StoreMetrics::default(),
            register: Vec::new(),
            events: None,
        }
    }

    pub(crate) fn service(&self) -> &SessionService {
        &self.inner.service
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn api_keys(&self) -> &ApiKeys {
        &self.inner.api_keys
    }

    pub(crate) fn forward_auth(&self) -> &ForwardAuth {
        &self.inner.forward_auth
    }

    /// The store check behind `/readyz`, and how long it may take.
    pub(crate) fn events(&self) -> Option<&EventFeed> {
        self.inner.events.as_ref()
    }

    pub(crate) fn store_probe(&self) -> (&StoreProbe, Duration) {
        (&self.inner.store_probe, self.inner.readiness_timeout)
    }
}

/// A metrics registration a caller adds to `/metrics`.
pub(crate) type Register = Box<dyn FnOnce(&mut Registry) + Send>;

/// Builds an [`ApiState`]: API keys, forward-auth settings and metrics,
/// each with a default.
#[must_use = "nothing is built until `build`"]
pub struct ApiStateBuilder {
    service: SessionService,
    api_keys: ApiKeys,
    forward_auth: ForwardAuth,
    store_metrics: StoreMetrics,
    register: Vec<Register>,
    events: Option<EventFeed>,
}

impl std::fmt::Debug for ApiStateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiStateBuilder")
            .field("api_keys", &self.api_keys)
            .field("forward_auth", &self.forward_auth)
            .field("store_metrics", &self.store_metrics)
            .field("registrations", &self.register.len())
            .finish_non_exhaustive()
    }
}

impl ApiStateBuilder {
    /// The keys `/v1` requires as `Authorization: Bearer <key>`. Without
    /// any (the default) `/v1` is open and every route answers only
    /// requests addressed to a loopback name.
    pub fn api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = keys;
        self
    }

    /// Where forward auth finds the token and which headers carry the
    /// identity back ([`ForwardAuth::default`] unless given).
    pub fn forward_auth(mut self, settings: ForwardAuth) -> Self {
        self.forward_auth = settings;
        self
    }

    /// The store-call metrics `/metrics` shows: those of the decorator the
    /// service's store (and change log) were wrapped in. Without it the
    /// store families are served empty.
    pub fn store_metrics(mut self, metrics: &StoreMetrics) -> Self {
        self.store_metrics = metrics.clone();
        self
    }

    /// Adds the caller's own metrics to `/metrics`: `register` is called
    /// once, at [`build`](Self::build), with the registry every family of
    /// the service is in, whose names it prefixes with `session_`. A
    /// binary registers what only it knows this way (its connections, its
    /// log writer).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use session_core::memory::MemoryStore;
    /// # use session_core::{MemoryCache, SessionService};
    /// use session_http::ApiState;
    /// use session_http::prometheus_client::metrics::counter::Counter;
    ///
    /// # let service = SessionService::builder(Arc::new(MemoryStore::new()), Arc::new(MemoryCache::new())).build();
    /// let logins = Counter::<u64>::default();
    /// let state = ApiState::builder(service)
    ///     .register_metrics({
    ///         let logins = logins.clone();
    ///         move |registry| registry.register("host_logins", "Logins", logins)
    ///     })
    ///     .build();
    /// // Served as `session_host_logins_total`.
    /// logins.inc();
    /// ```
    pub fn register_metrics(
        mut self,
        register: impl FnOnce(&mut Registry) + Send + 'static,
    ) -> Self {
        self.register.push(Box::new(register));
        self
    }

    /// Serves `GET /v1/events` from `feed` (without one, the route
    /// answers 404). The caller runs [`EventFeed::run`] and closes the feed
    /// at shutdown.
    pub fn events(mut self, feed: EventFeed) -> Self {
        self.events = Some(feed);
        self
    }

    /// The state, with every metric registered.
    #[must_use]
    pub fn build(self) -> ApiState {
        let metrics = Metrics::new(self.service.clone(), &self.store_metrics, self.register);
        ApiState {
            inner: Arc::new(StateInner {
                service: self.service,
                api_keys: self.api_keys,
                forward_auth: self.forward_auth,
                metrics,
                readiness_timeout: Duration::from_secs(2),
                store_probe: StoreProbe::default(),
                events: self.events,
            }),
        }
    }
}
