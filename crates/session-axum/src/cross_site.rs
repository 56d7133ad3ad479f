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

use headers::{Header as _, HeaderValue};
use http::request::Parts;
use http::{Method, header};

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
        if is_safe(&parts.method) {
            return true;
        }
        let headers = &parts.headers;
        let origin = headers.get(header::ORIGIN);
        if let Some(origin) = origin
            && self
                .trusted
                .iter()
                .any(|trusted| trusted.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        {
            return true;
        }
        if let Some(site) = headers.get(SEC_FETCH_SITE) {
            return matches!(site.as_bytes(), b"same-origin" | b"none");
        }
        let Some(origin) = origin else {
            return true;
        };
        same_host(origin, parts)
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
fn same_host(origin: &HeaderValue, parts: &Parts) -> bool {
    let Ok(origin) = headers::Origin::decode(&mut std::iter::once(origin)) else {
        return false;
    };
    if origin.is_null() {
        return false;
    }
    let host = match parts.headers.get(header::HOST) {
        Some(value) => headers::Host::decode(&mut std::iter::once(value)).ok(),
        None => parts.uri.authority().cloned().map(headers::Host::from),
    };
    host.is_some_and(|host| {
        host.hostname().eq_ignore_ascii_case(origin.hostname()) && host.port() == origin.port()
    })
}
