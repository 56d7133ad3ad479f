//! The session cookie: set at login, cleared at logout.

use cookie::{Cookie, SameSite};
use http::HeaderValue;
use session_core::SessionToken;

/// The default cookie name. The `__Host-` prefix (RFC 6265bis §4.1.3.2)
/// makes browsers accept the cookie only if it is `Secure`, has `Path=/` and
/// no `Domain`: a subdomain, or a page served over plain HTTP on the same
/// host, cannot plant or overwrite it.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-session";

/// The longest lifetime browsers keep a cookie (RFC 6265bis §5.6.1 caps
/// `Max-Age` and `Expires` at 400 days), in seconds. Sessions never expire
/// by time, so the cookie lasts as long as a browser allows.
pub const MAX_COOKIE_AGE_SECS: i64 = 400 * 24 * 60 * 60;

/// Builds the `Set-Cookie` headers of the session cookie.
///
/// Always `Secure` (sent over HTTPS only; browsers treat
/// `http://localhost` as secure too), `HttpOnly` (no script can read the
/// token), `SameSite=Lax` (not sent on cross-site subrequests or form
/// posts, still sent when a link from elsewhere is followed) and `Path=/`,
/// with no `Domain` (this host only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCookie {
    name: String,
    max_age_secs: Option<i64>,
}

impl Default for SessionCookie {
    fn default() -> Self {
        Self::named(DEFAULT_COOKIE_NAME)
    }
}

impl SessionCookie {
    /// A session cookie called `name` (see [`DEFAULT_COOKIE_NAME`]).
    ///
    /// # Panics
    ///
    /// If `name` is not a cookie name (an RFC 6265 token): a configuration
    /// bug, found at start.
    #[must_use]
    pub fn named(name: impl Into<String>) -> Self {
        let name = name.into();
        assert!(
            crate::credentials::is_token(&name),
            "a session cookie name must be an RFC 6265 token"
        );
        Self {
            name,
            max_age_secs: Some(MAX_COOKIE_AGE_SECS),
        }
    }

    /// Makes the cookie last until the browser closes (no `Max-Age`)
    /// instead of [`MAX_COOKIE_AGE_SECS`]. The session itself still lasts
    /// until it is revoked.
    #[must_use]
    pub const fn until_browser_closes(mut self) -> Self {
        self.max_age_secs = None;
        self
    }

    /// The cookie's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cookie that carries `token`.
    #[must_use]
    pub fn with_token(&self, token: &SessionToken) -> Cookie<'static> {
        let mut cookie = self.base(token.expose_secret().to_owned());
        if let Some(secs) = self.max_age_secs {
            cookie.set_max_age(cookie::time::Duration::seconds(secs));
        }
        cookie
    }

    /// The cookie that makes the browser forget the session cookie at
    /// logout: same name, path and attributes, empty, `Max-Age=0` and an
    /// `Expires` in the past (for browsers that ignore `Max-Age`).
    #[must_use]
    pub fn removal(&self) -> Cookie<'static> {
        let mut cookie = self.base(String::new());
        cookie.make_removal();
        cookie
    }

    /// [`with_token`](Self::with_token) as a `Set-Cookie` value, marked
    /// sensitive so HTTP/2 and HTTP/3 never put it in a compression table.
    #[must_use]
    pub fn set_cookie(&self, token: &SessionToken) -> HeaderValue {
        let mut value = header_value(&self.with_token(token));
        value.set_sensitive(true);
        value
    }

    /// [`removal`](Self::removal) as a `Set-Cookie` value.
    #[must_use]
    pub fn clear_cookie(&self) -> HeaderValue {
        header_value(&self.removal())
    }

    fn base(&self, value: String) -> Cookie<'static> {
        Cookie::build((self.name.clone(), value))
            .secure(true)
            .http_only(true)
            .same_site(SameSite::Lax)
            .path("/")
            .build()
    }
}

fn header_value(cookie: &Cookie<'_>) -> HeaderValue {
    // The name is a checked token and the value a token's base62 text (or
    // empty); the attributes are fixed ASCII: always a valid header value.
    HeaderValue::try_from(cookie.to_string()).expect("a session cookie is visible ASCII")
}
