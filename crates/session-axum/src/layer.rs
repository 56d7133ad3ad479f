//! The tower layer: resolve once per request, optionally refuse.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::{Authenticated, SessionAuth};

/// Resolves each request's session once, before the inner service, and
/// leaves the outcome in the request's extensions, where
/// [`CurrentSession`](crate::CurrentSession) finds it. Made by
/// [`SessionAuth::layer`] (every request passes) or
/// [`SessionAuth::require_layer`] (a request without an active session gets
/// the [`SessionRejection`](crate::SessionRejection) response instead).
#[derive(Debug, Clone)]
pub struct SessionLayer {
    auth: SessionAuth,
    required: bool,
}

impl SessionLayer {
    pub(crate) const fn new(auth: SessionAuth, required: bool) -> Self {
        Self { auth, required }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionMiddleware {
            inner,
            auth: self.auth.clone(),
            required: self.required,
        }
    }
}

/// The service [`SessionLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct SessionMiddleware<S> {
    inner: S,
    auth: SessionAuth,
    required: bool,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionMiddleware<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<&'static str> + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; the service polled ready is the one called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let required = self.required;
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let outcome = auth.authenticate(&parts).await;
            if required && let Err(rejection) = &outcome {
                return Ok(rejection.to_response());
            }
            parts.extensions.insert(Authenticated::new(&auth, outcome));
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}
