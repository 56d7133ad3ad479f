//! session-axum's behaviour, driven in-process through axum routers.

mod cookie;
mod cross_site;
mod extractor;
mod layer;
mod sources;
mod support;
