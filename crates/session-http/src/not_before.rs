//! `/v1/not-before`: the fleet-wide "not before" mark, for incident
//! response. Reading it needs the `read` scope, raising it `write`.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::input::ApiJson;

/// The mark in force and the progress of the sweep that revokes the
/// sessions it marks.
#[derive(Serialize, ToSchema)]
pub(crate) struct NotBeforeView {
    /// The mark in force (RFC 3339): every session created before it is
    /// refused. Null when no mark was ever raised.
    #[serde(with = "time::serde::rfc3339::option")]
    not_before: Option<OffsetDateTime>,
    /// The name of the API key that raised the mark to its value (`default`
    /// for a key configured without a name), or null.
    #[schema(value_type = Option<String>, pattern = "^[a-z][a-z0-9_]{0,31}$", min_length = 1, max_length = 32)]
    raised_by: Option<String>,
    /// The mark up to which every session it marks has been revoked in the
    /// store, with reason `admin` (RFC 3339); null while no sweep has
    /// completed.
    #[serde(with = "time::serde::rfc3339::option")]
    swept_through: Option<OffsetDateTime>,
    /// Whether every session the mark marks is revoked in the store (true
    /// with no mark). Refused at once either way: the sweep only records it.
    swept: bool,
}

/// The mark in force after a raise.
#[derive(Serialize, ToSchema)]
pub(crate) struct RaisedNotBefore {
    /// The mark in force (RFC 3339): the later of the one asked for and
    /// the one in force before.
    #[serde(with = "time::serde::rfc3339")]
    not_before: OffsetDateTime,
}

/// A raise of the mark.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RaiseNotBeforeRequest {
    /// The mark (RFC 3339), not in the future: every session created before
    /// it is refused from now on. Absent or null: now, by the service's clock.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default)]
    not_before: Option<String>,
}

/// Read the "not before" mark in force and how far the sweep that revokes
/// the sessions it marks has gone.
#[utoipa::path(
    get, path = "/v1/not-before", tag = "incident",
    responses(
        (status = 200, description = "The mark in force (null when none) and the sweep's progress", body = NotBeforeView),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn read_not_before(
    State(state): State<ApiState>,
) -> Result<Json<NotBeforeView>, ApiError> {
    let read = state.service().read_not_before().await?;
    Ok(Json(NotBeforeView {
        not_before: read.mark,
        raised_by: read.raised_by.as_ref().map(|by| by.as_str().to_owned()),
        swept_through: read.swept_through,
        swept: read.swept(),
    }))
}

/// Raise the "not before" mark: every session created before it is refused
/// by every instance from then on, and revoked in the background with reason
/// `admin`, by this API key. The mark only rises: an earlier time than the
/// one in force changes nothing.
#[utoipa::path(
    put, path = "/v1/not-before", tag = "incident",
    request_body = RaiseNotBeforeRequest,
    responses(
        (status = 200, description = "The mark in force after the raise", body = RaisedNotBefore),
        (status = 400, description = "`invalid_request`: the body is malformed or `not_before` is \
not an RFC 3339 time. `not_before_in_future`: the time is past the service's clock. Nothing was \
changed", body = ErrorBody),
        (status = 503, description = "Store unavailable; nothing was changed", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub(crate) async fn raise_not_before(
    State(state): State<ApiState>,
    caller: Option<Extension<Caller>>,
    ApiJson(request): ApiJson<RaiseNotBeforeRequest>,
) -> Result<Json<RaisedNotBefore>, ApiError> {
    let service = state.service();
    let now = service.now();
    let at = match request.not_before {
        None => now,
        Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|_| ApiError::invalid_request("not_before: must be an RFC 3339 time"))?,
    };
    if at > now {
        return Err(ApiError::not_before_in_future());
    }
    let by = caller.map(|Extension(Caller(name))| name);
    let not_before = service.raise_not_before_as(at, by).await?;
    Ok(Json(RaisedNotBefore { not_before }))
}
