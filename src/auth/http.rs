//! The HTTP API's check: a middleware that admits a request whose token's role allows it,
//! and answers 401 (with `WWW-Authenticate: Bearer`) or 403 otherwise, in the API's JSON
//! error shape.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::policy::http_role;
use super::{AuthFailure, Authorizer};
use crate::http::ApiError;

/// What the middleware checks against.
#[derive(Clone)]
pub struct HttpAuth {
    /// The tokens in force.
    pub authorizer: Arc<Authorizer>,
    /// Whether `/metrics`, `/healthz` and `/readyz` need a token too.
    pub metrics_auth: bool,
}

/// Admits `req` or answers the refusal.
pub async fn check(
    axum::extract::State(auth): axum::extract::State<HttpAuth>,
    req: Request,
    next: Next,
) -> Response {
    let Some(needed) = http_role(req.method(), req.uri().path(), auth.metrics_auth) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match auth.authorizer.check(presented, needed) {
        Ok(id) => {
            tracing::trace!(token = %id.name, role = id.role.name(), "request admitted");
            next.run(req).await
        }
        Err(f) => refusal(f, needed.name()),
    }
}

fn refusal(f: AuthFailure, needed: &str) -> Response {
    if f.unauthenticated() {
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", f.to_string())
            .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{f}: it needs the {needed} role"),
        )
        .into_response()
    }
}
