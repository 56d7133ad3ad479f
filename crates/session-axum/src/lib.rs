//! Sessions for axum and tower applications that embed [`SessionService`].
//!
//! - [`CurrentSession`]: the extractor, giving the session's
//!   [`SessionIdentity`] (its id and account) from the cache alone, in
//!   either cache mode. Required, it refuses the request
//!   ([`SessionRejection`], RFC 6750 §3); as `Option<CurrentSession>`, a
//!   missing, malformed, unknown or revoked token is `None` (a stale cookie
//!   does not break a public page) and only "the service cannot answer" (not
//!   ready, busy, store down) is an error. It finds [`SessionAuth`] in the
//!   router's state through [`FromRef`], so no layer is needed.
//! - [`CurrentSessionRecord`]: the same, with the session's whole record
//!   (created at, user agent, IP, label), which a compact cache may have to
//!   read from the store; or [`SessionAuth::record`] from a
//!   [`CurrentSession`] already extracted.
//! - [`SessionLayer`]: resolves once per request and leaves the result in
//!   the request's extensions (the extractor then uses it), or refuses
//!   requests without a session for a whole router or a non-axum stack.
//! - [`TokenSources`]: where a token is read (Bearer, a cookie, a header),
//!   over `&HeaderMap`, refusing two different tokens in one request.
//! - [`SessionCookie`]: the `Set-Cookie` of login and logout, with safe
//!   defaults (`__Host-`, `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`).
//! - [`CrossSiteCheck`]: unsafe requests authenticated by the cookie alone
//!   must come from the host's own origin (Fetch Metadata, then `Origin`);
//!   its [`layer`](CrossSiteCheck::layer) holds every unsafe request to the
//!   same rule, for login and signup forms (login CSRF).
//!
//! This crate knows no store, SQL, cache library or JSON.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use session_axum::{CurrentSession, SessionAuth};
//!
//! async fn me(CurrentSession(me): CurrentSession) -> String {
//!     me.account_id.to_string()
//! }
//!
//! # fn app(service: session_core::SessionService) -> Router {
//! let auth = SessionAuth::builder(service).build();
//! Router::new().route("/me", get(me)).with_state(auth)
//! # }
//! ```

mod cookie;
mod credentials;
mod cross_site;
mod layer;
mod rejection;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use session_core::{Error, Session, SessionIdentity, SessionService};

pub use crate::cookie::{DEFAULT_COOKIE_NAME, MAX_COOKIE_AGE_SECS, SessionCookie};
pub use crate::credentials::{
    Presented, PresentedToken, SourceKind, TokenSource, TokenSources, is_token,
};
pub use crate::cross_site::{CrossSiteCheck, CrossSiteLayer, CrossSiteMiddleware, InvalidOrigin};
pub use crate::layer::{SessionLayer, SessionMiddleware};
pub use crate::rejection::{RejectionKind, SessionRejection};

use crate::rejection::Challenges;

/// The service and the rules for finding and checking a request's session.
/// Put it in the router's state (directly, or as a field with [`FromRef`]);
/// cheap to clone (two reference counts).
#[derive(Debug, Clone)]
pub struct SessionAuth {
    service: SessionService,
    policy: Arc<Policy>,
}

#[derive(Debug)]
struct Policy {
    sources: TokenSources,
    cookie: SessionCookie,
    cross_site: CrossSiteCheck,
    challenges: Challenges,
}

/// Builds a [`SessionAuth`].
#[derive(Debug)]
#[must_use]
pub struct SessionAuthBuilder {
    service: SessionService,
    sources: Option<TokenSources>,
    cookie: SessionCookie,
    cross_site: CrossSiteCheck,
    realm: Option<String>,
}

impl SessionAuthBuilder {
    /// Where tokens are read (default: `Authorization: Bearer`, then the
    /// session cookie).
    pub fn sources(mut self, sources: TokenSources) -> Self {
        self.sources = Some(sources);
        self
    }

    /// The session cookie (default: [`SessionCookie::default`], named
    /// [`DEFAULT_COOKIE_NAME`]).
    pub fn cookie(mut self, cookie: SessionCookie) -> Self {
        self.cookie = cookie;
        self
    }

    /// Which cross-site cookie requests are allowed (default: none).
    pub fn cross_site(mut self, check: CrossSiteCheck) -> Self {
        self.cross_site = check;
        self
    }

    /// The realm named in `WWW-Authenticate` (RFC 6750 §3; default: none).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// # Panics
    ///
    /// If the sources read a cookie other than the one [`SessionCookie`]
    /// sets, or the realm is not printable ASCII without quotes or
    /// backslashes: configuration bugs, found at start.
    pub fn build(self) -> SessionAuth {
        let sources = self.sources.unwrap_or_else(|| {
            TokenSources::new()
                .bearer()
                .cookie(self.cookie.name().to_owned())
        });
        assert!(
            sources.sources().iter().all(
                |source| !matches!(source, TokenSource::Cookie(name) if name != self.cookie.name())
            ),
            "the cookie tokens are read from must be the session cookie that is set"
        );
        SessionAuth {
            service: self.service,
            policy: Arc::new(Policy {
                sources,
                cookie: self.cookie,
                cross_site: self.cross_site,
                challenges: Challenges::new(self.realm.as_deref()),
            }),
        }
    }
}

impl SessionAuth {
    /// Starts building over `service`.
    pub fn builder(service: SessionService) -> SessionAuthBuilder {
        SessionAuthBuilder {
            service,
            sources: None,
            cookie: SessionCookie::default(),
            cross_site: CrossSiteCheck::default(),
            realm: None,
        }
    }

    /// The service, for handlers that create, list or revoke.
    #[must_use]
    pub const fn service(&self) -> &SessionService {
        &self.service
    }

    /// The session cookie, to set at login and clear at logout.
    #[must_use]
    pub fn cookie(&self) -> &SessionCookie {
        &self.policy.cookie
    }

    /// Where tokens are read.
    #[must_use]
    pub fn sources(&self) -> &TokenSources {
        &self.policy.sources
    }

    /// A layer that resolves each request's session once and leaves the
    /// outcome in its extensions, for [`CurrentSession`] to take.
    #[must_use]
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(self.clone(), false)
    }

    /// A layer that refuses (403) every unsafe request from another site,
    /// whatever authenticates it, by this policy's [`CrossSiteCheck`] (its
    /// trusted origins included): the cookie check extended to routes with
    /// no session yet, such as login and signup, as Go's
    /// `CrossOriginProtection` does for every request.
    #[must_use]
    pub fn cross_site_layer(&self) -> CrossSiteLayer {
        self.policy.cross_site.layer()
    }

    /// A layer that also refuses every request without an active session,
    /// with the [`SessionRejection`] response, before it reaches the inner
    /// service: to guard a whole router, or a tower stack that is not axum.
    #[must_use]
    pub fn require_layer(&self) -> SessionLayer {
        SessionLayer::new(self.clone(), true)
    }

    /// The whole record of a session [`CurrentSession`] extracted:
    /// [`SessionService::session`], its errors as rejections.
    ///
    /// # Errors
    ///
    /// A [`SessionRejection`] of the matching [`RejectionKind`]: invalid
    /// when the session was revoked since it was extracted, unavailable when
    /// a compact cache had to read the record and the store did not answer.
    pub async fn record(&self, current: &CurrentSession) -> Result<Arc<Session>, SessionRejection> {
        self.service
            .session(&current.0)
            .await
            .map_err(|error| self.policy.challenges.reject(kind_of(&error)))
    }

    /// The request's active session: finds its token, checks a
    /// cookie-only unsafe request's origin, and resolves it.
    ///
    /// # Errors
    ///
    /// A [`SessionRejection`] of the matching [`RejectionKind`].
    pub async fn authenticate(&self, parts: &Parts) -> Result<SessionIdentity, SessionRejection> {
        let reject = |kind| self.policy.challenges.reject(kind);
        let token = match self.policy.sources.find(&parts.headers) {
            Presented::Token(token) => token,
            Presented::Missing => return Err(reject(RejectionKind::MissingToken)),
            Presented::Malformed => return Err(reject(RejectionKind::InvalidToken)),
            Presented::Conflicting => return Err(reject(RejectionKind::ConflictingTokens)),
        };
        // Before any lookup: a forged request must not spend a miss read.
        if token.is_cookie_only() && !self.policy.cross_site.allows(parts) {
            return Err(reject(RejectionKind::CrossSite));
        }
        self.service
            .resolve(token.expose_secret())
            .await
            .map_err(|error| reject(kind_of(&error)))
    }
}

fn kind_of(error: &Error) -> RejectionKind {
    match error {
        Error::InvalidToken => RejectionKind::InvalidToken,
        Error::NotReady => RejectionKind::NotReady,
        error if error.is_store_unavailable() => RejectionKind::StoreUnavailable,
        _ => RejectionKind::StoreFailed,
    }
}

/// The request's active session: its [`SessionIdentity`], which needs no
/// store read in either cache mode. Its whole record is
/// [`SessionAuth::record`] away, or extract [`CurrentSessionRecord`].
///
/// As `CurrentSession`, a request without one is refused with a
/// [`SessionRejection`]. As `Option<CurrentSession>`, a request with no
/// valid session (no token, a malformed, unknown or revoked one, two
/// different ones, or a cross-site unsafe request the cookie alone would
/// authenticate) is `None`, and only a service that cannot answer (not
/// ready, busy, store down) refuses it: a 503 says "retry", never "signed
/// out".
///
/// Uses the outcome a [`SessionLayer`] left in the request when the layer
/// was made from the [`SessionAuth`] in the state (or a clone of it);
/// otherwise, an outcome of another `SessionAuth` (another cookie, realm or
/// policy) included, resolves with the one in the state.
#[derive(Debug, Clone, Copy)]
pub struct CurrentSession(pub SessionIdentity);

/// The request's active session with its whole record: [`CurrentSession`],
/// then [`SessionAuth::record`]. With a compact cache the record may come
/// from the store, so a store outage refuses the request (503) even though
/// [`CurrentSession`] would have let it through; extract that instead where
/// the id and the account are enough.
///
/// Optional as [`CurrentSession`] is: `None` for no valid session, a
/// rejection only when the service cannot answer.
#[derive(Debug, Clone)]
pub struct CurrentSessionRecord(pub Arc<Session>);

/// What a [`SessionLayer`] leaves in a request's extensions: the outcome,
/// and the policy of the [`SessionAuth`] that decided it.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    by: Arc<Policy>,
    outcome: Result<SessionIdentity, SessionRejection>,
}

impl Authenticated {
    pub(crate) fn new(
        auth: &SessionAuth,
        outcome: Result<SessionIdentity, SessionRejection>,
    ) -> Self {
        Self {
            by: Arc::clone(&auth.policy),
            outcome,
        }
    }
}

impl<S> FromRequestParts<S> for CurrentSession
where
    SessionAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = SessionAuth::from_ref(state);
        // Only this `SessionAuth`'s own outcome: a layer of another (a user
        // realm's cookie around an admin router) decided by other rules.
        if let Some(layer) = parts.extensions.get::<Authenticated>()
            && Arc::ptr_eq(&layer.by, &auth.policy)
        {
            return layer.outcome.clone().map(Self);
        }
        auth.authenticate(parts).await.map(Self)
    }
}

impl<S> OptionalFromRequestParts<S> for CurrentSession
where
    SessionAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        optional(<Self as FromRequestParts<S>>::from_request_parts(parts, state).await)
    }
}

impl<S> FromRequestParts<S> for CurrentSessionRecord
where
    SessionAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let current =
            <CurrentSession as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        SessionAuth::from_ref(state)
            .record(&current)
            .await
            .map(Self)
    }
}

impl<S> OptionalFromRequestParts<S> for CurrentSessionRecord
where
    SessionAuth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        optional(<Self as FromRequestParts<S>>::from_request_parts(parts, state).await)
    }
}

/// What an optional extractor answers for its required form's `result`:
/// `None` when the request has no valid session, the rejection when the
/// service could not answer.
fn optional<T>(result: Result<T, SessionRejection>) -> Result<Option<T>, SessionRejection> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(rejection) if is_no_session(&rejection) => Ok(None),
        Err(rejection) => Err(rejection),
    }
}

/// Whether a rejection says the request has no valid session (so an
/// optional extractor answers `None`), rather than that the service could
/// not answer.
fn is_no_session(rejection: &SessionRejection) -> bool {
    matches!(
        rejection.kind(),
        RejectionKind::MissingToken
            | RejectionKind::InvalidToken
            | RejectionKind::ConflictingTokens
            | RejectionKind::CrossSite
    )
}

/// The Rust snippets of README.md, compiled as this crate's doctests (it
/// depends on what a host uses), so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeSnippets;

/// The Rust snippets of docs/ARCHITECTURE.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/ARCHITECTURE.md")]
struct ArchitectureSnippets;
