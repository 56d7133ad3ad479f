//! Finding the session token a request presents: the one rule every entry
//! point (this crate's extractor and layer, a forward-auth endpoint) shares.

use headers::Header as _;
use headers::authorization::{Authorization, Bearer};
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where a request may carry its session token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1). An `Authorization`
    /// header of another scheme (`Basic`, …) is not a session token and is
    /// left alone.
    Bearer,
    /// A cookie of this name. Browsers send it on their own, so unsafe
    /// requests authenticated by it alone are checked for cross-site origin
    /// ([`CrossSiteCheck`](crate::CrossSiteCheck)).
    Cookie(String),
    /// A header of this name holding the bare token (for example
    /// `X-Session-Token`). A page cannot make a browser send a custom header
    /// cross-site without a CORS preflight, so, like Bearer, it is exempt
    /// from the cross-site check.
    Header(HeaderName),
}

/// The sources a request's token is looked for in, in order.
///
/// Every source is read: a request presenting two *different* values is
/// refused ([`Presented::Conflicting`]), whatever the order, so a stale
/// cookie can never silently win over a fresh Bearer token or the other way
/// round. The order only decides which source a found token is reported
/// as coming from.
///
/// ```
/// use session_axum::TokenSources;
///
/// let sources = TokenSources::new()
///     .bearer()
///     .cookie("__Host-session")
///     .header(http::HeaderName::from_static("x-session-token"));
/// assert_eq!(sources.cookie_name(), Some("__Host-session"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenSources {
    order: Vec<TokenSource>,
}

/// What a request presents, found by [`TokenSources::find`]. Borrows the
/// request's headers, so finding a token copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'h> {
    /// No configured source holds a token.
    Missing,
    /// One token (possibly sent in several places, always the same value).
    Token(PresentedToken<'h>),
    /// A Bearer `Authorization` header that is not one (no token after
    /// the scheme, bytes a token cannot hold): sent, and not valid.
    Malformed,
    /// Two different values: RFC 6750 §3.1 `invalid_request` ("uses more
    /// than one method for including an access token").
    Conflicting,
}

/// A token as the request presents it, not yet checked: its text may be
/// malformed; resolving it says whether it is a session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PresentedToken<'h> {
    text: &'h str,
    first: SourceKind,
    cookie_only: bool,
}

/// Which kind of source a token was first found in (in configured order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `Authorization: Bearer`.
    Bearer,
    /// The configured cookie.
    Cookie,
    /// The configured custom header.
    Header,
}

impl std::fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken")
            .field("text", &"<redacted>")
            .field("first", &self.first)
            .field("cookie_only", &self.cookie_only)
            .finish()
    }
}

impl<'h> PresentedToken<'h> {
    /// The token's text, to resolve. A secret: never log or echo it.
    #[must_use]
    pub const fn expose_secret(&self) -> &'h str {
        self.text
    }

    /// The first configured source that held it.
    #[must_use]
    pub const fn origin(&self) -> SourceKind {
        self.first
    }

    /// Whether only a cookie carried it: the browser attaches cookies on its
    /// own, so such a request may have been forged by another site.
    #[must_use]
    pub const fn is_cookie_only(&self) -> bool {
        self.cookie_only
    }
}

impl TokenSources {
    /// No sources yet; add them in the order wanted.
    #[must_use]
    pub const fn new() -> Self {
        Self { order: Vec::new() }
    }

    /// Adds `Authorization: Bearer`.
    #[must_use]
    pub fn bearer(mut self) -> Self {
        self.order.push(TokenSource::Bearer);
        self
    }

    /// Adds the cookie `name`.
    ///
    /// # Panics
    ///
    /// If `name` is not a cookie name (RFC 6265 §4.1.1: a token, at least
    /// one of the visible ASCII characters other than separators): a
    /// configuration bug, found at start.
    #[must_use]
    pub fn cookie(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        assert!(
            is_token(&name),
            "a session cookie name must be an RFC 6265 token"
        );
        self.order.push(TokenSource::Cookie(name));
        self
    }

    /// Adds the header `name`, holding the bare token.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.order.push(TokenSource::Header(name));
        self
    }

    /// The sources, in order.
    #[must_use]
    pub fn sources(&self) -> &[TokenSource] {
        &self.order
    }

    /// The first configured cookie name, if any.
    #[must_use]
    pub fn cookie_name(&self) -> Option<&str> {
        self.order.iter().find_map(|source| match source {
            TokenSource::Cookie(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The token `headers` present: every occurrence in every source is
    /// read (several `Authorization` or `Cookie` headers, a cookie repeated
    /// inside one), and all must agree. A `Cookie` field is read on bytes,
    /// as user agents write it (RFC 6265 §5.4): other cookies, whatever
    /// bytes they hold, never hide or break the session cookie.
    #[must_use]
    pub fn find<'h>(&self, headers: &'h HeaderMap) -> Presented<'h> {
        let mut found: Option<PresentedToken<'h>> = None;
        for source in &self.order {
            let mut outcome = Ok(());
            let mut offer = |text: &'h str, origin: SourceKind| match &mut found {
                None => {
                    found = Some(PresentedToken {
                        text,
                        first: origin,
                        cookie_only: origin == SourceKind::Cookie,
                    });
                    Ok(())
                }
                Some(token) if token.text == text => {
                    token.cookie_only &= origin == SourceKind::Cookie;
                    Ok(())
                }
                Some(_) => Err(Presented::Conflicting),
            };
            match source {
                TokenSource::Bearer => {
                    for value in headers.get_all(AUTHORIZATION) {
                        match bearer_token(value) {
                            BearerValue::Token(text) => outcome = offer(text, SourceKind::Bearer),
                            BearerValue::Malformed => outcome = Err(Presented::Malformed),
                            BearerValue::OtherScheme => {}
                        }
                        if outcome.is_err() {
                            break;
                        }
                    }
                }
                TokenSource::Cookie(name) => {
                    // Every `Cookie` field: HTTP/2 sends one per cookie
                    // (RFC 9113 §8.2.3), and proxies may split them.
                    'fields: for field in headers.get_all(COOKIE) {
                        for value in cookie_values(field.as_bytes(), name.as_bytes()) {
                            outcome = match std::str::from_utf8(value) {
                                Ok(text) => offer(text, SourceKind::Cookie),
                                // The session cookie itself holds bytes no
                                // token has: sent, and not valid.
                                Err(_) => Err(Presented::Malformed),
                            };
                            if outcome.is_err() {
                                break 'fields;
                            }
                        }
                    }
                }
                TokenSource::Header(name) => {
                    for value in headers.get_all(name) {
                        outcome = match value.to_str() {
                            Ok(text) => offer(text.trim(), SourceKind::Header),
                            Err(_) => Err(Presented::Malformed),
                        };
                        if outcome.is_err() {
                            break;
                        }
                    }
                }
            }
            if let Err(refused) = outcome {
                return refused;
            }
        }
        found.map_or(Presented::Missing, Presented::Token)
    }
}

/// The values of every cookie named `name` in one `Cookie` field, read as
/// user agents write the field (RFC 6265 §5.4: the pairs `name=value`
/// joined by `; `), on bytes.
///
/// Browsers send back whatever bytes other cookies of the site were set
/// with: UTF-8 or Latin-1 text, quotes, pieces without `=` (RFC 6265 §5.2
/// stores a value up to the next `;`, whatever it holds). So the field is
/// split on `;` alone, each piece is cut at its first `=` into a name and a
/// value with spaces and tabs trimmed from both (RFC 6265 §5.2 steps 4–5,
/// the rule RFC 6265bis §5.6 keeps), and the name is compared byte for
/// byte, case included. A piece without `=` names no cookie (a nameless
/// cookie) and is skipped. Other cookies' bytes are never decoded, so they
/// can neither hide the session cookie nor break the field. The value is
/// returned as sent, quotes included: the session cookie is set unquoted.
///
/// The `cookie` crate (and `headers`' `Cookie`) parse only a field that is
/// valid UTF-8 text, so one non-ASCII neighbour would hide the session.
fn cookie_values<'h, 'n>(
    field: &'h [u8],
    name: &'n [u8],
) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
    field.split(|byte| *byte == b';').filter_map(move |pair| {
        let equals = pair.iter().position(|byte| *byte == b'=')?;
        let (key, value) = (&pair[..equals], &pair[equals + 1..]);
        (trim_whitespace(key) == name).then(|| trim_whitespace(value))
    })
}

/// `bytes` without leading and trailing spaces and tabs (RFC 6265's `WSP`).
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let is_wsp = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = bytes.iter().position(|b| !is_wsp(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_wsp(b))
        .map_or(start, |last| last + 1);
    &bytes[start..end]
}

enum BearerValue<'h> {
    Token(&'h str),
    Malformed,
    OtherScheme,
}

/// One `Authorization` value, decoded by `headers`' `Authorization<Bearer>`
/// (scheme matched without regard to case, RFC 9110 §11.1).
fn bearer_token(value: &HeaderValue) -> BearerValue<'_> {
    if Authorization::<Bearer>::decode(&mut std::iter::once(value)).is_ok() {
        // Decoding succeeded, so the value is visible ASCII and starts
        // with the scheme and a space; the token is what `Bearer::token`
        // returns, taken here from the borrowed bytes so it outlives the
        // decoded copy.
        let text = value.to_str().unwrap_or_default();
        let token = text[BEARER_PREFIX_LEN..].trim();
        return if token.is_empty() {
            BearerValue::Malformed
        } else {
            BearerValue::Token(token)
        };
    }
    let bytes = value.as_bytes();
    let scheme = bytes.split(|b| *b == b' ').next().unwrap_or_default();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        BearerValue::Malformed
    } else {
        BearerValue::OtherScheme
    }
}

/// `Bearer` and the one space `Authorization<Bearer>` requires after it.
const BEARER_PREFIX_LEN: usize = "Bearer ".len();

/// Whether `text` is an HTTP token (RFC 9110 §5.6.2: one or more `tchar`),
/// what a cookie name must be (RFC 6265 §4.1.1 `cookie-name = token`) and a
/// header name a gateway can copy as-is. For checking names at start, before
/// [`TokenSources::cookie`], which panics on anything else.
#[must_use]
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
