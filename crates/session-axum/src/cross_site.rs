//! Refusing cross-site requests that a cookie alone authenticates (CSRF).
//!
//! The rule is Go 1.25's `net/http.CrossOriginProtection` (after Filippo
//! Valsorda's "CSRF" analysis), which the OWASP CSRF Prevention Cheat Sheet's
//! Fetch Metadata section also describes:
//!
//! 1. Safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`; RFC 9110 §9.2.1) pass:
//!    they must not change state.
//! 2. An `Origin` the host trusts explicitly passes.
//! 3. `Sec-Fetch-Site: same-origin` passes; so does `none`, which the Fetch
//!    Metadata spec sends only for requests the user started (a typed URL, a
//!    bookmark), never for one a page made. `same-site` and `cross-site` are
//!    refused: a sibling subdomain is another origin and may be less trusted.
//! 4. Without `Sec-Fetch-Site` (browsers before 2023, or plain HTTP on some),
//!    `Origin` must name the request's own host (`Host`, or HTTP/2's
//!    `:authority`); `Origin: null` is refused.
//! 5. With neither header the request did not come from a browser page
//!    (every browser since 2020 sends `Origin` on cross-origin unsafe
//!    requests), so it passes: curl has no ambient cookie to abuse.
//!
//! The extractor applies it to unsafe requests the session cookie alone
//! authenticates. Go's `CrossOriginProtection` applies it to every unsafe
//! request, and so does [`CrossSiteCheck::layer`]: a login or signup form
//! carries no session yet, and a page on another site that posts it signs
//! the browser in to an account of the attacker's choosing (login CSRF).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use headers::{Header as _, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, Uri, header};
use tower::{Layer, Service};

use crate::rejection::{RejectionKind, SessionRejection};

/// Fetch Metadata's request header (not in `http`'s constants).
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Which cross-site unsafe requests carrying only the session cookie are
/// refused (403): see the module's rule. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossSiteCheck {
    trusted: Vec<HeaderValue>,
}

/// Why [`CrossSiteCheck::trust_origin`] refused an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a trusted origin must be scheme://host[:port], with no path, as browsers send it")]
pub struct InvalidOrigin;

impl CrossSiteCheck {
    /// Trusts `origin` (`https://app.example.com`, with a port only when it
    /// is not the scheme's default) to make unsafe cookie requests even
    /// though it is another site: a separate front end, an SSO callback.
    ///
    /// # Errors
    ///
    /// [`InvalidOrigin`] if `origin` is not a serialised origin.
    pub fn trust_origin(mut self, origin: &str) -> Result<Self, InvalidOrigin> {
        let value = HeaderValue::from_str(origin).map_err(|_| InvalidOrigin)?;
        let parsed =
            headers::Origin::decode(&mut std::iter::once(&value)).map_err(|_| InvalidOrigin)?;
        if parsed.is_null() {
            return Err(InvalidOrigin);
        }
        // Browsers serialise origins in lower case; keep the canonical form
        // so a request's header compares byte for byte.
        let canonical = HeaderValue::from_str(&parsed.to_string().to_ascii_lowercase())
            .map_err(|_| InvalidOrigin)?;
        if canonical.as_bytes() != origin.to_ascii_lowercase().as_bytes() {
            return Err(InvalidOrigin);
        }
        self.trusted.push(canonical);
        Ok(self)
    }

    /// Whether the request in `parts` may proceed when only a cookie
    /// authenticates it.
    #[must_use]
    pub fn allows(&self, parts: &Parts) -> bool {
        self.allows_request(&parts.method, &parts.uri, &parts.headers)
    }

    /// A tower layer that refuses, with 403 before the inner service, every
    /// unsafe request this check does not allow, whatever authenticates it
    /// (Go's `CrossOriginProtection.Handler`): put it around login, signup
    /// and any other form that changes state without a session. Safe
    /// methods and requests from no browser page pass untouched.
    #[must_use]
    pub fn layer(&self) -> CrossSiteLayer {
        CrossSiteLayer {
            check: Arc::new(self.clone()),
        }
    }

    fn allows_request(&self, method: &Method, uri: &Uri, fields: &HeaderMap) -> bool {
        if is_safe(method) {
            return true;
        }
        let origin = fields.get(header::ORIGIN);
        if let Some(origin) = origin
            && self
                .trusted
                .iter()
                .any(|trusted| trusted.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        {
            return true;
        }
        if let Some(site) = fields.get(SEC_FETCH_SITE) {
            return matches!(site.as_bytes(), b"same-origin" | b"none");
        }
        let Some(origin) = origin else {
            return true;
        };
        same_host(origin, uri, fields)
    }
}

/// Refuses cross-site unsafe requests before the inner service; made by
/// [`CrossSiteCheck::layer`] or [`SessionAuth::cross_site_layer`](crate::SessionAuth::cross_site_layer).
#[derive(Debug, Clone)]
pub struct CrossSiteLayer {
    check: Arc<CrossSiteCheck>,
}

impl<S> Layer<S> for CrossSiteLayer {
    type Service = CrossSiteMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CrossSiteMiddleware {
            inner,
            check: Arc::clone(&self.check),
        }
    }
}

/// The service [`CrossSiteLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct CrossSiteMiddleware<S> {
    inner: S,
    check: Arc<CrossSiteCheck>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CrossSiteMiddleware<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: From<&'static str> + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self
            .check
            .allows_request(request.method(), request.uri(), request.headers())
        {
            return Box::pin(self.inner.call(request));
        }
        // Built inside the future, which then holds nothing that must be
        // `Send`. No challenge: no credential would make it pass.
        Box::pin(async { Ok(SessionRejection::new(RejectionKind::CrossSite, None).to_response()) })
    }
}

/// RFC 9110 §9.2.1's safe methods.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether `origin` names the host the request was sent to.
fn same_host(origin: &HeaderValue, uri: &Uri, fields: &HeaderMap) -> bool {
    let Ok(origin) = headers::Origin::decode(&mut std::iter::once(origin)) else {
        return false;
    };
    if origin.is_null() {
        return false;
    }
    let host = match fields.get(header::HOST) {
        Some(value) => headers::Host::decode(&mut std::iter::once(value)).ok(),
        None => uri.authority().cloned().map(headers::Host::from),
    };
    host.is_some_and(|host| {
        host.hostname().eq_ignore_ascii_case(origin.hostname()) && host.port() == origin.port()
    })
}
