//! The token check. Without a token (loopback only) everything is open. With one, writes
//! need it, and with `--private` every read of data does too; the page shell and its assets
//! hold no data and stay open, so a browser can load the page that asks for the token.
//!
//! The token comes as `Authorization: Bearer TOKEN` (scripts, Prometheus) or as the
//! `filtermon_token` cookie the page sets (`SameSite=Strict`, so other sites' pages cannot
//! send it; writes also need a JSON body, which a cross-site form cannot send).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use super::App;

/// Paths that serve no data.
fn is_shell(path: &str) -> bool {
    path.starts_with("/assets/")
        || matches!(path, "/" | "/curves" | "/recall")
        || path.starts_with("/checkpoints/")
}

/// Refuses a request that needs the token and does not carry it.
pub(super) async fn require_token(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = app.settings.token.as_deref() else {
        return next.run(req).await;
    };
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let needed = write || (app.settings.private && !is_shell(req.uri().path()));
    if needed && !carries(&req, token) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

fn carries(req: &Request, token: &str) -> bool {
    let headers = req.headers();
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("filtermon_token="));
    bearer.chain(cookies).any(|t| same(t.trim(), token))
}

/// Compares in time that depends on the length only, so timing does not leak the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn compares_whole_tokens() {
        assert!(same("s3cret", "s3cret"));
        assert!(!same("s3cret", "s3creT"));
        assert!(!same("s3cret", "s3cre"));
        assert!(!same("", "x"));
    }
}
