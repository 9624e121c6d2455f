//! The checkpoint page's per-domain table. The daemon stores results over the whole
//! evalset only, so the split by domain is recomputed here from the checkpoint's stored
//! per-token losses, with the filter definitions stored beside its results: the same
//! filters, applied to the same losses.

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::App;
use crate::analysis::recall::RecallRow;
use crate::analysis::stats::aggregate::{aggregate, AggregateOptions};
use crate::error::one_line;
use crate::evalset::filter::Filter;
use crate::evalset::loaded::LoadedEvalset;
use crate::evalset::EvalSet;
use crate::store::detail::{CheckpointDetail, JobRow};
use crate::store::Store;

/// Bootstrap resamples of the per-domain intervals: enough for a page, quick to compute.
const RESAMPLES: usize = 200;

/// One filter on one domain of one evalset.
#[derive(Debug, Clone, Serialize)]
pub(super) struct DomainRow {
    evalset: String,
    filter: String,
    domain: String,
    mean: Option<f64>,
    n: usize,
    ci_lo: Option<f64>,
    ci_hi: Option<f64>,
    top1: Option<f64>,
    top5: Option<f64>,
}

/// Every scored evalset's rows of one checkpoint.
pub(super) type DomainTable = Vec<DomainRow>;

/// The table, or why there is none (the evalset folder is gone or changed since scoring).
#[derive(Serialize)]
pub(super) struct DomainsField {
    domains: Arc<DomainTable>,
    domains_error: Option<String>,
}

impl App {
    /// The per-domain table of a checkpoint, from the cache once all its jobs are done.
    pub(super) fn domain_table(&self, store: &Store, ck: &CheckpointDetail) -> DomainsField {
        let cached = self
            .domains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ck.id)
            .cloned();
        if let Some(table) = cached {
            return DomainsField {
                domains: table,
                domains_error: None,
            };
        }
        let mut table = DomainTable::new();
        for job in ck.jobs.iter().filter(|j| j.state == "done") {
            if let Err(e) = domain_rows(store, ck.id, job, &mut table) {
                return DomainsField {
                    domains: Arc::new(table),
                    domains_error: Some(one_line(&e)),
                };
            }
        }
        let table = Arc::new(table);
        if ck.jobs.iter().all(|j| j.state == "done") {
            self.domains
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ck.id, table.clone());
        }
        DomainsField {
            domains: table,
            domains_error: None,
        }
    }
}

fn domain_rows(
    store: &Store,
    checkpoint_id: i64,
    job: &JobRow,
    out: &mut DomainTable,
) -> anyhow::Result<()> {
    let Some(scores) = store.token_scores(checkpoint_id, job.evalset_id)? else {
        return Ok(());
    };
    let es = EvalSet::open(std::path::Path::new(&job.evalset_dir))
        .with_context(|| format!("evalset {:?}", job.evalset))?;
    if es.len() != scores.loss.len() {
        anyhow::bail!(
            "evalset {:?} at {} has {} tokens, its stored losses {}: it changed since scoring",
            job.evalset,
            job.evalset_dir,
            es.len(),
            scores.loss.len()
        );
    }
    let mut filters = Vec::new();
    for (name, definition) in store.filter_definitions(checkpoint_id, job.evalset_id)? {
        if RecallRow::parse(&name).is_none() {
            filters.push(Filter::compile(&name, &definition, es.domains())?);
        }
    }
    let doc_count = es.header().docs.len();
    let loaded = LoadedEvalset::new(es, filters)?;
    let rows = aggregate(
        &loaded.labels,
        &loaded.docs,
        loaded.es.domains(),
        doc_count,
        &scores,
        &loaded.filters,
        AggregateOptions {
            resamples: RESAMPLES,
            seed: 0,
            by_domain: true,
        },
    );
    let finite = |x: f64| x.is_finite().then_some(x);
    out.extend(rows.into_iter().filter_map(|r| {
        Some(DomainRow {
            evalset: job.evalset.clone(),
            domain: r.domain?,
            filter: r.filter,
            mean: finite(r.mean),
            n: r.n,
            ci_lo: finite(r.ci_lo),
            ci_hi: finite(r.ci_hi),
            top1: finite(r.top1),
            top5: finite(r.top5),
        })
    }));
    Ok(())
}
