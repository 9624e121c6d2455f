//! The pages and their assets, compiled into the binary so the dashboard works offline on a
//! cluster node. A request names an asset; it never names a file.
//!
//! The charts are drawn by uPlot 1.6.32 (MIT, from the npm registry; its licence is served
//! at `/assets/uPlot.LICENSE`): 50 kB, no dependencies, log axes, hover legends and series
//! toggles built in, and fast with thousands of points.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use super::api::ApiError;

/// Every asset: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("assets/uPlot.LICENSE"),
    ),
];

/// Every page is the same shell; the script draws the view its path names.
pub(super) async fn page() -> Html<&'static str> {
    Html(include_str!("assets/index.html"))
}

/// `GET /assets/{name}`: an embedded asset by exact name, or 404.
pub(super) async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let Some((_, kind, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Err(ApiError::not_found(format!("no asset named {name:?}")));
    };
    Ok((
        [
            (header::CONTENT_TYPE, *kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        *bytes,
    )
        .into_response())
}
