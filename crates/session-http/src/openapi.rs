//! What the OpenAPI document says about answers no handler gives itself:
//! those of the layers every route passes through. Added here, in one
//! place, from what each operation is (guarded by the API key, taking a
//! body), so a new route is documented as the layers treat it.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

use axum::http::Method;

use crate::auth::Scope;
use crate::error::MAX_BODY_BYTES;

/// Adds to every operation the answers of the layers around it.
pub(crate) struct LayerAnswers;

impl utoipa::Modify for LayerAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            // Forward auth is routed outside these layers (see `router`).
            if path.starts_with(crate::FORWARD_AUTH) {
                continue;
            }
            for (method, operation) in [
                (Method::GET, &mut item.get),
                (Method::POST, &mut item.post),
                (Method::PUT, &mut item.put),
                (Method::PATCH, &mut item.patch),
                (Method::DELETE, &mut item.delete),
            ] {
                if let Some(operation) = operation {
                    document_layers(operation);
                    if let Some(scope) = crate::auth::required_scope(path, &method) {
                        document_scope(operation, scope);
                    }
                }
            }
        }
    }
}

fn document_layers(operation: &mut Operation) {
    let too_large = format!(
        "`payload_too_large`: the body, or its declared `Content-Length`, is over \
         {MAX_BODY_BYTES} bytes (answered before the body is read)"
    );
    add(operation, "413", &too_large, false);
    add(
        operation,
        "421",
        "`misdirected_request`: only without an API key configured, a request not addressed \
         to `localhost`, an address of 127.0.0.0/8 or `[::1]`",
        false,
    );
    if operation.request_body.is_some() {
        add(
            operation,
            "415",
            "`unsupported_media_type`: the body is not declared `application/json`",
            false,
        );
    }
    if operation.security.is_some() {
        add(
            operation,
            "401",
            "`unauthorized`: the API key is missing or wrong (with `WWW-Authenticate: Bearer`)",
            false,
        );
        add(
            operation,
            "503",
            "`unavailable`: the store is unavailable; nothing was changed. Retry after \
             `Retry-After` seconds",
            true,
        );
        add(
            operation,
            "500",
            "`internal`: a failure retrying will not fix; details are in the service's log",
            false,
        );
    }
    add_timeout(operation);
}

/// The 403 of a key without the scope `operation` needs.
fn document_scope(operation: &mut Operation, scope: Scope) {
    let scope = scope.as_str();
    add(
        operation,
        "403",
        &format!(
            "`insufficient_scope`: the API key lacks the `{scope}` scope (with \
             `WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"{scope}\"`)"
        ),
        false,
    );
}

/// What session-app's accept loop answers, around every route, to a request
/// it has not answered within `--request-timeout`.
const TIMEOUT_503: &str = "`timeout` (session-app): no answer within its `--request-timeout`; \
    a write may still take effect. Retry after `Retry-After` seconds";

/// Adds the accept loop's 503 `timeout` to `operation`'s 503, or documents
/// one with it.
fn add_timeout(operation: &mut Operation) {
    use utoipa::openapi::RefOr;
    if let Some(RefOr::T(response)) = operation.responses.responses.get_mut("503") {
        response.description = format!("{}. Or {TIMEOUT_503}", response.description);
        return;
    }
    add(operation, "503", TIMEOUT_503, true);
}

/// Documents `status` with an error body, unless the handler already does.
fn add(operation: &mut Operation, status: &str, description: &str, retry_after: bool) {
    let responses = &mut operation.responses.responses;
    if responses.contains_key(status) {
        return;
    }
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            utoipa::openapi::HeaderBuilder::new()
                .schema(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Integer),
                )
                .description(Some("Seconds to wait: 1"))
                .build(),
        );
    }
    responses.insert(status.to_owned(), response.build().into());
}
