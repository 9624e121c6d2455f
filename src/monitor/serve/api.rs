//! The JSON API. Result rows carry the field names of `export`; errors are
//! `{"error": "…"}` with 400 (malformed request), 401 (no token), 404 (unknown route, id,
//! run or asset), 405, 413 (body over the limit) or 500.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::App;
use crate::error::{find, one_line, InputError};
use crate::store::activity::QueueCounts;
use crate::store::detail::CheckpointRecord;
use crate::store::report::{rfc3339, FailureRow, ResultRecord, ResultRow, RunStatus, StateCounts};

/// An API error with its status.
pub(super) struct ApiError(StatusCode, String);

impl ApiError {
    pub(super) fn bad_request(why: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, why.into())
    }

    pub(super) fn unauthorized() -> Self {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "a token is needed: send `Authorization: Bearer TOKEN`".into(),
        )
    }

    pub(super) fn not_found(why: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, why.into())
    }
}

impl From<anyhow::Error> for ApiError {
    /// An input error (an unknown alert id, a run that is gone) is the client's; anything
    /// else is the server's, and logged.
    fn from(e: anyhow::Error) -> Self {
        if find::<InputError>(&e).is_some() {
            return ApiError::not_found(one_line(&e));
        }
        tracing::error!(error = %one_line(&e), "dashboard request failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, one_line(&e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

/// A query or path the extractor refused, as a 400 with a JSON error.
fn malformed(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Any route not known: 404 with a JSON error.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// `GET /api/runs`.
#[derive(Serialize)]
struct Runs<'a> {
    runs: Vec<RunRecord<'a>>,
    failures: &'a [FailureRow],
    queue: QueueCounts,
}

/// A run of `status`, with its latest results as `export` writes them.
#[derive(Serialize)]
struct RunRecord<'a> {
    name: &'a str,
    arch: &'a str,
    dir: &'a str,
    baseline: Option<&'a str>,
    waiting_for_folder: bool,
    checkpoints: &'a StateCounts,
    last_scored_at: Option<String>,
    latest: Vec<ApiRow<'a>>,
}

pub(super) async fn runs(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let body = app
        .read(|_, store| {
            let status = store.status()?;
            let last = store.last_scored()?;
            let queue = store.queue_counts()?;
            let runs: Vec<RunRecord> = status
                .runs
                .iter()
                .map(|r: &RunStatus| RunRecord {
                    name: &r.name,
                    arch: &r.arch,
                    dir: &r.dir,
                    baseline: r.baseline.as_deref(),
                    waiting_for_folder: r.waiting_for_folder,
                    checkpoints: &r.checkpoints,
                    last_scored_at: last.get(&r.name).map(|&t| rfc3339(t)),
                    latest: r.latest.iter().map(ApiRow::from).collect(),
                })
                .collect();
            Ok(serde_json::to_vec(&Runs {
                runs,
                failures: &status.failures,
                queue,
            })?)
        })
        .await?;
    Ok(json_bytes(body))
}

/// Query of `GET /api/curves`; every key optional, unknown keys refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CurvesQuery {
    evalset: Option<String>,
    filter: Option<String>,
    run: Option<String>,
}

/// `GET /api/curves?evalset=&filter=&run=`: the matching result rows, ordered as `export`
/// orders them.
pub(super) async fn curves(
    State(app): State<Arc<App>>,
    query: Result<Query<CurvesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(malformed)?;
    for (key, value) in [
        ("evalset", &q.evalset),
        ("filter", &q.filter),
        ("run", &q.run),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(ApiError::bad_request(format!("`{key}` is empty")));
        }
    }
    let body = app
        .read(move |_, store| {
            let rows = store.results(q.run.as_deref())?;
            let records: Vec<ApiRow> = rows
                .iter()
                .filter(|r| q.evalset.as_ref().is_none_or(|e| *e == r.evalset))
                .filter(|r| q.filter.as_ref().is_none_or(|f| *f == r.filter))
                .map(ApiRow::from)
                .collect();
            Ok(serde_json::to_vec(&records)?)
        })
        .await?;
    Ok(json_bytes(body))
}

/// `GET /api/alerts`: every firing, newest last, as `alerts --json` lists them.
pub(super) async fn alerts(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let body = app
        .read(|_, store| Ok(serde_json::to_vec(&store.alerts()?)?))
        .await?;
    Ok(json_bytes(body))
}

/// Body of `POST /api/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ack {
    ack: i64,
}

/// `POST /api/alerts` with `{"ack": id}`: acknowledges a firing (again: no change).
pub(super) async fn ack(
    State(app): State<Arc<App>>,
    body: Result<Json<Ack>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(Ack { ack: id }) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("send the body as `Content-Type: application/json`")
        }
        too_big if too_big.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError(too_big.status(), too_big.body_text())
        }
        other => malformed(other.body_text()),
    })?;
    let db = app.db.clone();
    tokio::task::spawn_blocking(move || crate::store::Store::open_existing(&db)?.ack_alert(id))
        .await
        .map_err(|e| anyhow::anyhow!("acknowledging stopped: {e}"))??;
    tracing::info!(alert = id, "alert acknowledged from the dashboard");
    #[derive(Serialize)]
    struct Acked {
        acked: i64,
    }
    Ok(Json(Acked { acked: id }).into_response())
}

/// `GET /api/checkpoints/{id}`: the checkpoint, its results, its jobs and the per-domain
/// table recomputed from its stored per-token losses.
pub(super) async fn checkpoint(
    State(app): State<Arc<App>>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(malformed)?;
    let body = app
        .read(move |app, store| {
            let Some(detail) = store.checkpoint_detail(id)? else {
                return Ok(None);
            };
            let domains = app.domain_table(store, &detail);
            #[derive(Serialize)]
            struct Detail<'a> {
                #[serde(flatten)]
                checkpoint: CheckpointRecord<'a>,
                #[serde(flatten)]
                domains: super::domains::DomainsField,
            }
            Ok(Some(serde_json::to_vec(&Detail {
                checkpoint: CheckpointRecord::from(&detail),
                domains,
            })?))
        })
        .await?;
    match body {
        Some(b) => Ok(json_bytes(b)),
        None => Err(ApiError::not_found(format!("no checkpoint with id {id}"))),
    }
}

/// A result row of the API: `export`'s fields, and the checkpoint's id for its page.
#[derive(Serialize)]
struct ApiRow<'a> {
    #[serde(flatten)]
    record: ResultRecord<'a>,
    checkpoint_id: i64,
}

impl<'a> From<&'a ResultRow> for ApiRow<'a> {
    fn from(r: &'a ResultRow) -> Self {
        ApiRow {
            record: ResultRecord::from(r),
            checkpoint_id: r.checkpoint_id,
        }
    }
}

fn json_bytes(body: Vec<u8>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
