//! `GET /metrics`: the store as Prometheus (OpenMetrics text) sees it, read fresh at every
//! scrape, so a Grafana board can chart the filtered losses beside the training curves and
//! alert on a stalled run.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::api::ApiError;
use super::App;
use crate::store::now;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabel {
    run: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    run: String,
    arch: String,
    evalset: String,
    filter: String,
    kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub(super) async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let text = app
        .read(|_, store| {
            let status = store.status()?;
            let queue = store.queue_counts()?;
            let last = store.last_scored()?;
            let mut reg = <Registry>::with_prefix("filtermon");

            let depth = Gauge::<i64>::default();
            depth.set(i64::try_from(queue.queued)?);
            reg.register("queue_depth", "Jobs waiting to be scored", depth);
            let jobs = Family::<StateLabel, Gauge>::default();
            for (state, n) in [
                ("queued", queue.queued),
                ("running", queue.running),
                ("done", queue.done),
                ("failed", queue.failed),
            ] {
                jobs.get_or_create(&StateLabel { state })
                    .set(i64::try_from(n)?);
            }
            reg.register("jobs", "Jobs (checkpoint x evalset) by state", jobs);

            let scored = Family::<RunLabel, Counter>::default();
            let failed = Family::<RunLabel, Counter>::default();
            let since = Family::<RunLabel, FloatGauge>::default();
            let loss = Family::<ResultLabels, FloatGauge>::default();
            let gap = Family::<ResultLabels, FloatGauge>::default();
            let tokens = Family::<RunLabel, Gauge>::default();
            let t = now();
            for run in &status.runs {
                let label = RunLabel {
                    run: run.name.clone(),
                };
                scored.get_or_create(&label).inc_by(run.checkpoints.done);
                failed.get_or_create(&label).inc_by(run.checkpoints.failed);
                if let Some(&at) = last.get(&run.name) {
                    since.get_or_create(&label).set((t - at).max(0.0));
                }
                if let Some(newest) = run.latest.iter().map(|r| r.tokens).max() {
                    tokens.get_or_create(&label).set(i64::try_from(newest)?);
                }
                for r in &run.latest {
                    let labels = ResultLabels {
                        run: r.run.clone(),
                        arch: r.arch.clone(),
                        evalset: r.evalset.clone(),
                        filter: r.filter.clone(),
                        kind: r.kind.clone(),
                    };
                    if let Some(m) = r.mean.filter(|m| m.is_finite()) {
                        loss.get_or_create(&labels).set(m);
                    }
                    if let Some(g) = r.gap.filter(|g| g.is_finite()) {
                        gap.get_or_create(&labels).set(g);
                    }
                }
            }
            reg.register(
                "checkpoints_scored",
                "Checkpoints scored on every evalset",
                scored,
            );
            reg.register(
                "checkpoints_failed",
                "Checkpoints with a job out of attempts",
                failed,
            );
            reg.register(
                "seconds_since_last_scored",
                "Seconds since a job of the run was last scored",
                since,
            );
            reg.register(
                "latest_tokens",
                "Tokens seen by the run's latest scored checkpoint",
                tokens,
            );
            reg.register(
                "filtered_loss",
                "Mean NLL (nats) of the latest scored checkpoint on the filter",
                loss,
            );
            reg.register(
                "filtered_loss_gap",
                "Paired gap to the baseline (nats) of the latest scored checkpoint",
                gap,
            );
            let mut text = String::new();
            encode(&mut text, &reg)?;
            Ok(text)
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
