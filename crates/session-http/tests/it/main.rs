//! session-http's tests: the router in process, through
//! `tower::ServiceExt::oneshot`, over session-core's memory store and
//! cache. No socket, no database, no binary.

mod events;
mod forward_auth;
mod limits;
mod logs;
mod not_before;
mod reasons;
mod router;
mod scopes;
mod store_metrics;
