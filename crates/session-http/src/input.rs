//! Extractors for JSON bodies and query strings whose errors never repeat
//! what the client sent.
//!
//! A client may put anything in a field name or value, a token included, and
//! an error body is logged by gateways and shown to people. So no error here
//! is built from the `Display` of a serde error, which quotes the input
//! (`unknown field `…``, `invalid type: string "…"`). Each is built from its
//! kind (serde_json's [`classify`](serde_json::Error::classify)), its line
//! and column, and the API's own field names, which come from the request
//! type's `Deserialize` impl. A name the client sent is named back only after
//! it has been matched to one of those, and then in the API's own copy.

use std::fmt;
use std::str::FromStr;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::error::Category;
use session_core::{AccountId, SessionId};

use crate::error::{ApiError, MAX_BODY_BYTES};

/// A JSON request body, with errors in the API's shape that never echo input.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type());
        }
        // Cut at the limit as it is read, whatever the body declared: a
        // chunked body has no length to refuse up front.
        let bytes = Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<LengthLimitError>() {
                    ApiError::payload_too_large()
                } else {
                    ApiError::invalid_request("the request body could not be read")
                }
            })?
            .to_bytes();
        parse_json(&bytes).map(Self)
    }
}

/// A query string, with errors in the API's shape that never echo input.
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Self)
    }
}

/// An id in the path (`{id}`, `{account_id}`), parsed by axum's typed
/// [`Path`] extractor into a domain id. Whatever is
/// wrong with the segment, the answer is one `invalid_request` whose text
/// names the id and never repeats the segment
/// ([`ApiError::invalid_path_id`]).
pub(crate) struct ApiPath<T>(pub T);

/// A domain id that routes take in their path.
pub(crate) trait PathParam: FromStr + Send {
    /// The id's name in error messages: the API's name for it.
    const NAME: &'static str;
}

impl PathParam for SessionId {
    const NAME: &'static str = "session_id";
}

impl PathParam for AccountId {
    const NAME: &'static str = "account_id";
}

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: PathParam,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<PathId<T>>::from_request_parts(parts, state).await {
            Ok(Path(PathId(id))) => Ok(Self(id)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::invalid_path_id(T::NAME))
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// A decoded path segment as the id `T`, refused as [`ApiPath`] refuses it.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn path_id<T: PathParam>(segment: &str) -> Result<T, ApiError> {
    segment
        .parse()
        .map_err(|_| ApiError::invalid_path_id(T::NAME))
}

/// A path segment as a domain id, through its `FromStr`. The serde error
/// carries no text: [`ApiPath`] answers a fixed message whatever it says.
struct PathId<T>(T);

impl<'de, T: FromStr> de::Deserialize<'de> for PathId<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse()
            .map(Self)
            .map_err(|_| de::Error::custom("not an id"))
    }
}

/// Whether the body is declared JSON: `application/json` or
/// `application/<anything>+json`, with any parameters, as `axum::Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    // The spelling nearly every client sends, decided without parsing.
    if value == "application/json" {
        return true;
    }
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    // Compared in place: this runs for every body, so no lowercased copy.
    let subtype = subtype.as_bytes();
    let json = subtype.eq_ignore_ascii_case(b"json")
        || subtype
            .len()
            .checked_sub(5)
            .is_some_and(|start| subtype[start..].eq_ignore_ascii_case(b"+json"));
    kind.eq_ignore_ascii_case("application") && json
}

/// Where an input is: a JSON body's fields or a query string's parameters.
#[derive(Clone, Copy)]
enum Source {
    Body,
    Query,
}

impl Source {
    fn fields(self) -> &'static str {
        match self {
            Self::Body => "fields",
            Self::Query => "parameters",
        }
    }

    fn container(self) -> &'static str {
        match self {
            Self::Body => "the request body",
            Self::Query => "the query string",
        }
    }
}

/// Decodes a JSON body as [`ApiJson`] does, once it is known to be JSON.
///
/// `T` must refuse unknown fields (`#[serde(deny_unknown_fields)]`, as every
/// request body type here does): a body that decodes straight into it then
/// holds only the API's names, each once (serde's derive refuses a name
/// given twice), so it passes every check below and decodes to the same
/// value. Only a body that does not goes through the two passes that name
/// what is wrong; a well-formed request is read once, with no list of names.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is a JSON object: a derived `Deserialize` also fills a
    // struct from an array of its fields in order, so `[]` would pass for a
    // request whose fields are all optional. Anything else is refused below.
    let is_object = bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
    if is_object && let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let shape = Shape::of::<T>();
    // First the syntax and the names, which say nothing about `T`'s types.
    let keys = match serde_json::from_slice::<Keys>(bytes) {
        Ok(keys) => keys,
        Err(err) => {
            return Err(match err.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::invalid_request(format!(
                        "the request body is not valid JSON (line {}, column {})",
                        err.line(),
                        err.column()
                    ))
                }
                // `Keys` refuses only one shape of valid JSON.
                Category::Data => {
                    ApiError::invalid_request("the request body must be a JSON object")
                }
            });
        }
    };
    shape.check_names(&keys.0, Source::Body)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| shape.value_error(err.path(), &keys.0, Source::Body))
}

/// Decodes a query string (without the `?`) as [`ApiQuery`] does.
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let shape = Shape::of::<T>();
    // Reading pairs of strings cannot fail: invalid percent-encoding decodes lossily.
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let names: Vec<String> = pairs.into_iter().map(|(name, _)| name).collect();
    shape.check_names(&names, Source::Query)?;
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer)
        .map_err(|err| shape.value_error(err.path(), &names, Source::Query))
}

/// The names of a JSON object's members, in order, duplicates kept; the
/// values are checked for syntax only.
struct Keys(Vec<String>);

impl<'de> de::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = Keys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            keys.push(key);
        }
        Ok(Keys(keys))
    }
}

/// What a request type accepts, read from its `Deserialize` impl: the names
/// of its fields, and the first one that may not be omitted.
struct Shape {
    fields: &'static [&'static str],
    first_required: Option<&'static str>,
}

impl Shape {
    fn of<T: DeserializeOwned>() -> Self {
        let mut probe = Probe { fields: &[] };
        let first_required = match T::deserialize(&mut probe) {
            Err(ProbeError::Missing(field)) => Some(field),
            _ => None,
        };
        Self {
            fields: probe.fields,
            first_required,
        }
    }

    /// The API's own spelling of a name the client sent, if it is one.
    fn known(&self, name: &str) -> Option<&'static str> {
        self.fields.iter().copied().find(|field| *field == name)
    }

    fn list(&self) -> String {
        let names: Vec<String> = self.fields.iter().map(|f| format!("`{f}`")).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }

    /// Refuses a name the type does not define, and a name given twice (a
    /// proxy and this service could otherwise each read a different one).
    fn check_names(&self, names: &[String], source: Source) -> Result<(), ApiError> {
        for (index, name) in names.iter().enumerate() {
            let Some(field) = self.known(name) else {
                return Err(ApiError::invalid_request(format!(
                    "{} holds a name this API does not define; the {} are {}",
                    source.container(),
                    source.fields(),
                    self.list()
                )));
            };
            if names[..index].iter().any(|earlier| earlier == name) {
                return Err(ApiError::invalid_request(format!(
                    "{field}: given more than once"
                )));
            }
        }
        Ok(())
    }

    /// Names the field a value error is at, once every name is known to be
    /// the API's: a path into a field, or no path for a missing field.
    fn value_error(
        &self,
        path: &serde_path_to_error::Path,
        names: &[String],
        source: Source,
    ) -> ApiError {
        let at = path.iter().next().and_then(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => self.known(key),
            _ => None,
        });
        if let Some(field) = at {
            return ApiError::invalid_request(format!(
                "{field}: wrong type or value (see the OpenAPI document)"
            ));
        }
        match self.first_required {
            Some(field) if !names.iter().any(|name| name == field) => {
                ApiError::invalid_request(format!("{field}: required"))
            }
            _ => ApiError::invalid_request(format!(
                "{} does not match the API: one of its {} is missing or malformed",
                source.container(),
                source.fields()
            )),
        }
    }
}

/// A deserializer that only reads what a derived `Deserialize` impl says
/// about its struct: the field names, and, from an empty map, the first
/// field it cannot do without.
struct Probe {
    fields: &'static [&'static str],
}

#[derive(Debug)]
enum ProbeError {
    Missing(&'static str),
    Other,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Self::Other
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Missing(field)
    }
}

impl<'de> Deserializer<'de> for &mut Probe {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(ProbeError::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.fields = fields;
        visitor.visit_map(de::value::MapDeserializer::new(
            std::iter::empty::<((), ())>(),
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{CreateSessionRequest, ResolveRequest};

    /// The message of the error `parse_json::<T>` gives `body`.
    fn refusal<T: DeserializeOwned>(body: &str) -> String {
        match parse_json::<T>(body.as_bytes()) {
            Ok(_) => panic!("{body} was accepted"),
            Err(err) => err.parts().2.to_owned(),
        }
    }

    /// Bodies that serde alone could decode if a type let it (a name given
    /// twice, an unknown name) are refused, and named, for both body types.
    #[test]
    fn what_the_names_check_refuses_never_decodes_directly() {
        let account = "0b6f1d4e-6a3c-4c1f-9d7e-2f1a5c9e8b70";
        assert!(
            refusal::<ResolveRequest>(r#"{"token":"a","token":"b"}"#)
                .contains("token: given more than once")
        );
        assert!(
            refusal::<ResolveRequest>(r#"{"token":"a","extra":1}"#).contains("does not define")
        );
        assert!(
            refusal::<CreateSessionRequest>(&format!(
                r#"{{"account_id":"{account}","label":"a","label":"b"}}"#
            ))
            .contains("label: given more than once")
        );
        assert!(
            refusal::<CreateSessionRequest>(&format!(r#"{{"account_id":"{account}","tenant":1}}"#))
                .contains("does not define")
        );
        assert!(parse_json::<ResolveRequest>(br#"{"token":"a"}"#).is_ok());
    }
}
